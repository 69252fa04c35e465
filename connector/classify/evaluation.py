"""Scores for a set of predictions, as defined in DESIGN.md (Evaluation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score

from connector.classify.local import OUT_OF_SCOPE

_ABSTAIN = "\x00abstain"


def abstained(prediction: str | None) -> bool:
    """An answer of no category, or out of scope, hands the ticket to people."""
    return prediction is None or prediction == OUT_OF_SCOPE


def coverage_at_precision(labels: Sequence[str], predictions: Sequence[str | None], confidences: Sequence[float],
                          target: float = 0.95) -> float:
    """Share of all tickets auto-routed in the longest most-confident-first prefix that is `target` correct.

    Abstentions in the prefix are neither right nor wrong, and don't count as covered. A ticket
    labelled out_of_scope counts as wrong whenever it is routed to a category.
    """
    order = np.argsort(-np.asarray(confidences, dtype=float), kind="stable")
    routed = correct = best = 0
    for i in order:
        if abstained(predictions[i]):
            continue
        routed += 1
        correct += predictions[i] == labels[i]
        if correct >= target * routed:
            best = routed
    return best / len(labels) if labels else 0.0


def score(labels: Sequence[str], predictions: Sequence[str | None], confidences: Sequence[float]) -> dict[str, float]:
    """accuracy, macro_f1 (in-scope labels), coverage_at_95, and out-of-scope figures when such rows exist."""
    n = len(labels)
    right = [p == y or (abstained(p) and y == OUT_OF_SCOPE) for y, p in zip(labels, predictions, strict=True)]
    in_scope = sorted({y for y in labels if y != OUT_OF_SCOPE})
    result: dict[str, float] = {
        "n": n,
        "accuracy": float(np.mean(right)) if n else 0.0,
        "macro_f1": float(f1_score(labels, [_ABSTAIN if abstained(p) else p for p in predictions], labels=in_scope,
                                   average="macro", zero_division=0)) if in_scope else 0.0,
        "coverage_at_95": coverage_at_precision(labels, predictions, confidences, 0.95),
        "abstained": sum(abstained(p) for p in predictions),
    }
    in_rows = [i for i, y in enumerate(labels) if y != OUT_OF_SCOPE]
    oos_rows = [i for i, y in enumerate(labels) if y == OUT_OF_SCOPE]
    if oos_rows:
        result["in_scope_accuracy"] = float(np.mean([right[i] for i in in_rows])) if in_rows else 0.0
        result["out_of_scope_abstained"] = float(np.mean([abstained(predictions[i]) for i in oos_rows]))
    return result
