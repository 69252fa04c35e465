"""The feedback dataset, and the models trained on it.

The dataset is the taxonomy's examples, accepted corrections (the last group of each re-route
chain), confident Claude labels that nobody re-routed (distillation) and imported history. The
scheduled retrain judges a candidate on feedback the current model has never seen (what arrived
after it was trained): half of that is held out, the candidate trains on everything else, and it is
promoted only if its macro-F1 on the held-out half is no worse than the current model's. The promoted
model is then retrained on everything. Every model is kept, versioned, with its metrics.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.classify import embeddings
from connector.classify.evaluation import score
from connector.classify.local import OUT_OF_SCOPE, LocalModel
from connector.datasets import Dataset
from connector.mappings import Taxonomy, fits_taxonomy
from connector.models import MIN_HOLDOUT
from connector.store import Store

log = logging.getLogger(__name__)


class LabelMismatch(ValueError):
    """A dataset's labels are not the taxonomy's categories."""


@dataclass
class Examples:
    """Training examples with where each came from."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    added_at: list[float] = field(default_factory=list)  # when it became feedback; 0 for the taxonomy's

    def add(self, rows: Sequence[tuple[str, str, float | None]], source: str, taxonomy: Taxonomy) -> None:
        """Add (text, label, when) rows whose label is a category (or out_of_scope); others can't be learned."""
        for text, label, at in rows:
            if text and (label in taxonomy.categories or label == OUT_OF_SCOPE):
                self.texts.append(text)
                self.labels.append(label)
                self.sources.append(source)
                self.added_at.append(at or 0.0)

    def dataset(self, keep: Callable[[int], bool] = lambda i: True) -> Dataset:
        rows = [i for i in range(len(self.texts)) if keep(i)]
        return Dataset([self.texts[i] for i in rows], [self.labels[i] for i in rows])

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for source in self.sources:
            out[source] = out.get(source, 0) + 1
        return out


def taxonomy_dataset(taxonomy: Taxonomy) -> Dataset:
    """The example tickets written in taxonomy.yaml."""
    return Dataset(*taxonomy.examples())


def distilled_dataset(store: Store, taxonomy: Taxonomy, *, min_confidence: float, after_hours: float,
                      now: float) -> Dataset:
    """Confident Claude decisions that stood for `after_hours` without a re-route (source `llm`)."""
    rows = store.tickets.distillable(min_confidence=min_confidence, decided_before=now - after_hours * 3600)
    kept = [(text, label) for text, label, _ in rows if label in taxonomy.categories]
    return Dataset([text for text, _ in kept], [label for _, label in kept])


def feedback_examples(store: Store, taxonomy: Taxonomy, settings: Any, *, now: float) -> Examples:
    """Everything the local model learns from, by source."""
    examples = Examples()
    examples.add([(text, label, 0.0) for text, label in zip(*taxonomy.examples(), strict=True)], "taxonomy",
                 taxonomy)
    examples.add(store.corrections.accepted(), "correction", taxonomy)
    if settings.deskroute_distill:
        cutoff = now - settings.deskroute_distill_after_hours * 3600
        rows = store.tickets.distillable(min_confidence=settings.deskroute_distill_min_confidence,
                                         decided_before=cutoff)
        examples.add(rows, "llm", taxonomy)
    examples.add(store.corrections.history(), "history", taxonomy)
    return examples


def feedback_dataset(store: Store, taxonomy: Taxonomy, settings: Any, *, now: float) -> Dataset:
    """The feedback dataset as texts and labels."""
    return feedback_examples(store, taxonomy, settings, now=now).dataset()


def check_labels(dataset: Dataset, taxonomy: Taxonomy) -> None:
    """Raise LabelMismatch, naming the labels, unless every label is a category (or out_of_scope)."""
    unknown = sorted(set(dataset.labels) - set(taxonomy.categories) - {OUT_OF_SCOPE})
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise LabelMismatch(f"{len(unknown)} label(s) are not categories in taxonomy.yaml: {shown}")


# Model versions kept (the active one always is): enough to roll back, few enough that what an old
# model's vocabulary remembers doesn't outlive the retention of ticket text for long.
MODELS_KEPT = 10


def tickets_among(dataset: Dataset, taxonomy: Taxonomy) -> list[bool]:
    """Which texts are customers' tickets (everything but taxonomy.yaml's examples, which an admin wrote)."""
    written = set(taxonomy.examples()[0])
    return [text not in written for text in dataset.texts]


def save_model(store: Store, model: LocalModel, *, source: str, activate: bool, metrics: dict[str, Any] | None = None,
               clock: Callable[[], float] | None = None) -> int:
    """Keep a trained model in the store; returns its version."""
    blob = model.to_bytes()
    kept: dict[str, Any] = {k: model.meta[k] for k in ("cv_accuracy", "cv_confusion", "temperature", "train_seconds")
            if k in model.meta}
    version = store.models.save(blob=blob, labels=model.labels, n_examples=model.meta["n_examples"],
                               metrics={**kept, **(metrics or {})}, source=source,
                               sha256=hashlib.sha256(blob).hexdigest(), activate=activate,
                               now=(clock or store.clock)())
    pruned = store.models.prune(keep=MODELS_KEPT)
    if pruned:
        log.info("old model versions deleted", extra={"versions": ",".join(map(str, pruned))})
    return version


def train_active(store: Store, taxonomy: Taxonomy, extra: Dataset | None = None, *, source: str,
                 base: Dataset | None = None, may_activate: Callable[[], bool] = lambda: True) -> int:
    """Train on `base` (default: the taxonomy's examples) plus `extra`, and make the result the router's model
    (unless `may_activate()`, asked once it is trained, says no: it is then kept inactive)."""
    dataset = base if base is not None else taxonomy_dataset(taxonomy)
    if extra is not None:
        check_labels(extra, taxonomy)
        dataset = dataset + extra
    model = LocalModel.train(dataset.texts, dataset.labels, private=tickets_among(dataset, taxonomy))
    activate = may_activate()
    version = save_model(store, model, source=source if activate else f"{source} (not activated)",
                         activate=activate)
    log.info("model trained and activated" if activate else "model trained but not activated: outdated meanwhile",
             extra={"model_version": version, "n_examples": len(dataset)})
    return version


def ensure_model(store: Store, taxonomy: Taxonomy, settings: Any = None,
                 may_activate: Callable[[], bool] = lambda: True) -> int:
    """The active model's version, training one first if there is none that fits the taxonomy (see
    train_active for `may_activate`)."""
    version = store.models.active_version()
    if version is not None:
        if fits_taxonomy(store.models.info(version).labels, taxonomy):
            return version
        log.warning("active model doesn't match the taxonomy's categories; retraining",
                    extra={"model_version": version})
    base = feedback_dataset(store, taxonomy, settings, now=time.time()) if settings is not None else None
    return train_active(store, taxonomy, source="feedback dataset" if base else "taxonomy examples", base=base,
                        may_activate=may_activate)


# --- the scheduled retrain and its promotion gate ---------------------------------------------------

@dataclass
class RetrainReport:
    """What a retrain did."""

    outcome: str  # promoted | refused (below the current model) | kept inactive (may_promote said no) | skipped
    version: int | None
    candidate_f1: float
    current_f1: float | None
    n_train: int
    n_holdout: int
    reason: str

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"


def _in_holdout(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 2 == 0


def split(examples: Examples, *, unseen_after: float) -> tuple[Dataset, Dataset]:
    """(train, holdout): the holdout is half, by text hash, of the feedback that arrived after
    `unseen_after` (the current model's training), so that the current model has never seen it."""
    held = {i for i, at in enumerate(examples.added_at) if at > unseen_after and _in_holdout(examples.texts[i])}
    return examples.dataset(lambda i: i not in held), examples.dataset(lambda i: i in held)


def macro_f1(model: LocalModel, dataset: Dataset) -> float:
    """Macro-F1 of a model's answers on a labelled dataset."""
    predictions = model.predict_many(dataset.texts) if dataset.texts else []
    return score(dataset.labels, [p.label for p in predictions], [p.confidence for p in predictions])["macro_f1"]


def consider(store: Store, candidate: LocalModel, holdout: Dataset, *, source: str,
             retrain_on: Dataset | None = None, private: list[bool] | None = None,
             may_promote: Callable[[], bool] = lambda: True) -> RetrainReport:
    """Promote the candidate if it does no worse than the active model on the held-out slice.

    With `retrain_on`, a promoted candidate is retrained on that (the full dataset) before activation;
    `private` says which of its texts are tickets (see LocalModel.train).
    A refused candidate is still kept, inactive, with its metrics.
    """
    current_version = store.models.active_version()
    current = LocalModel.from_bytes(store.models.blob(current_version)) if current_version is not None else None
    candidate_f1 = macro_f1(candidate, holdout)
    current_f1 = macro_f1(current, holdout) if current is not None and set(current.labels) >= set(holdout.labels) \
        else None
    metrics = {"holdout_macro_f1": round(candidate_f1, 4), "current_holdout_macro_f1": current_f1,
               "n_holdout": len(holdout)}
    if current_f1 is not None and candidate_f1 < current_f1:
        version = save_model(store, candidate, source=f"{source} (refused)", activate=False, metrics=metrics)
        reason = f"macro-F1 on the held-out slice {candidate_f1:.3f} is below the current model's {current_f1:.3f}"
        log.warning("candidate model refused", extra={"model_version": version, "candidate_f1": candidate_f1,
                                                      "current_f1": current_f1})
        return RetrainReport("refused", version, candidate_f1, current_f1, candidate.meta["n_examples"],
                             len(holdout), reason)
    final = (LocalModel.train(retrain_on.texts, retrain_on.labels, private=private)
             if retrain_on is not None else candidate)
    if not may_promote():  # leadership lost while training (another process decides now), or categories edited
        version = save_model(store, final, source=f"{source} (not promoted: leadership lost or categories edited)",
                             activate=False, metrics=metrics)
        return RetrainReport("kept inactive", version, candidate_f1, current_f1, candidate.meta["n_examples"],
                             len(holdout), "while training, this process stopped leading the scheduler or the "
                             "categories were edited")
    version = save_model(store, final, source=source, activate=True, metrics=metrics)
    log.info("model promoted", extra={"model_version": version, "candidate_f1": candidate_f1, "current_f1": current_f1})
    return RetrainReport("promoted", version, candidate_f1, current_f1, candidate.meta["n_examples"], len(holdout),
                         "no worse than the current model" if current_f1 is not None else "no model to compare with")


def retrain(store: Store, taxonomy: Taxonomy, settings: Any, *, now: float,
            may_promote: Callable[[], bool] = lambda: True) -> RetrainReport:
    """Train on the feedback dataset and promote the result if it passes the gate (and `may_promote()`
    still says yes once training is done)."""
    examples = feedback_examples(store, taxonomy, settings, now=now)
    current = store.models.active_version()
    trained_at = store.models.info(current).created_at if current is not None else 0.0
    train, holdout = split(examples, unseen_after=trained_at)
    counts = ", ".join(f"{n} {source}" for source, n in sorted(examples.counts().items()))
    if current is not None and len(holdout) < MIN_HOLDOUT:
        reason = f"only {len(holdout)} new feedback example(s) to judge a candidate on; waiting for {MIN_HOLDOUT}"
        log.info("retrain skipped", extra={"held_out": len(holdout)})
        return RetrainReport("skipped", None, 0.0, None, len(train), len(holdout), reason)
    with embeddings.reusing():  # the final fit and the held-out answers embed the same texts again
        candidate = LocalModel.train(train.texts, train.labels, private=tickets_among(train, taxonomy))
        everything = examples.dataset()
        return consider(store, candidate, holdout, source=f"retrain: {counts}", retrain_on=everything,
                        private=tickets_among(everything, taxonomy), may_promote=may_promote)


def promote(store: Store, taxonomy: Taxonomy, version: int) -> None:
    """Make a stored model active; it must route the taxonomy's categories."""
    if not fits_taxonomy(store.models.info(version).labels, taxonomy):
        raise LabelMismatch(f"model v{version} was trained for other categories than taxonomy.yaml's")
    store.models.activate(version)


def rollback(store: Store, taxonomy: Taxonomy) -> int:
    """Activate the newest model older than the active one that fits the taxonomy; returns its version."""
    current = store.models.active_version()
    for info in store.models.all():  # newest first
        if current is not None and info.version >= current:
            continue
        if fits_taxonomy(info.labels, taxonomy):
            store.models.activate(info.version)
            return info.version
    raise LookupError("no earlier model for these categories to roll back to")
