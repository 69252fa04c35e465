"""The training data and the models built from it.

For now the dataset is the taxonomy's examples plus any labelled files an admin passes to
`deskroute train`. Corrections, distilled LLM labels and imported history join it later.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from connector.classify.local import OUT_OF_SCOPE, LocalModel
from connector.datasets import Dataset
from connector.mappings import Taxonomy
from connector.store import Store

log = logging.getLogger(__name__)


class LabelMismatch(ValueError):
    """A dataset's labels are not the taxonomy's categories."""


def taxonomy_dataset(taxonomy: Taxonomy) -> Dataset:
    """The example tickets written in taxonomy.yaml."""
    return Dataset(*taxonomy.examples())


def distilled_dataset(store: Store, taxonomy: Taxonomy, *, min_confidence: float, after_hours: float,
                      now: float) -> Dataset:
    """Confident Claude decisions that stood for `after_hours` without a re-route (source `llm`)."""
    rows = store.distillable(min_confidence=min_confidence, decided_before=now - after_hours * 3600)
    rows = [(text, label) for text, label in rows if label in taxonomy.categories]
    return Dataset([text for text, _ in rows], [label for _, label in rows])


def feedback_dataset(store: Store, taxonomy: Taxonomy, settings: Any, *, now: float) -> Dataset:
    """Everything the local model learns from: the taxonomy's examples and distilled Claude labels."""
    dataset = taxonomy_dataset(taxonomy)
    if settings.deskroute_distill:
        dataset = dataset + distilled_dataset(store, taxonomy, min_confidence=settings.deskroute_distill_min_confidence,
                                              after_hours=settings.deskroute_distill_after_hours, now=now)
    return dataset


def fits_taxonomy(labels: list[str], taxonomy: Taxonomy) -> bool:
    """True if a model with these labels can route every taxonomy category and nothing else."""
    return set(labels) - {OUT_OF_SCOPE} == set(taxonomy.categories)


def check_labels(dataset: Dataset, taxonomy: Taxonomy) -> None:
    """Raise LabelMismatch, naming the labels, unless every label is a category (or out_of_scope)."""
    unknown = sorted(set(dataset.labels) - set(taxonomy.categories) - {OUT_OF_SCOPE})
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise LabelMismatch(f"{len(unknown)} label(s) are not categories in taxonomy.yaml: {shown}")


def save_model(store: Store, model: LocalModel, *, source: str, activate: bool,
               clock: Callable[[], float] | None = None) -> int:
    """Keep a trained model in the store; returns its version."""
    blob = model.to_bytes()
    metrics = {k: model.meta[k] for k in ("cv_accuracy", "temperature", "train_seconds") if k in model.meta}
    return store.save_model(blob=blob, labels=model.labels, n_examples=model.meta["n_examples"], metrics=metrics,
                            source=source, sha256=hashlib.sha256(blob).hexdigest(), activate=activate,
                            now=(clock or store.clock)())


def train_active(store: Store, taxonomy: Taxonomy, extra: Dataset | None = None, *, source: str,
                 base: Dataset | None = None) -> int:
    """Train on `base` (default: the taxonomy's examples) plus `extra`, and make the result the router's model."""
    dataset = base if base is not None else taxonomy_dataset(taxonomy)
    if extra is not None:
        check_labels(extra, taxonomy)
        dataset = dataset + extra
    model = LocalModel.train(dataset.texts, dataset.labels)
    version = save_model(store, model, source=source, activate=True)
    log.info("model trained and activated", extra={"model_version": version, "n_examples": len(dataset)})
    return version


def ensure_model(store: Store, taxonomy: Taxonomy) -> int:
    """The active model's version, training one from the taxonomy first if there is none that fits it."""
    version = store.active_model_version()
    if version is not None:
        labels = next(m["labels"] for m in store.models() if m["version"] == version)
        if fits_taxonomy(labels, taxonomy):
            return version
        log.warning("active model doesn't match the taxonomy's categories; retraining from the taxonomy",
                    extra={"model_version": version})
    return train_active(store, taxonomy, source="taxonomy examples")
