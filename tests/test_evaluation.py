"""Scores as DESIGN.md defines them."""

from __future__ import annotations

import pytest

from connector.classify.evaluation import coverage_at_precision, score


def test_coverage_is_the_longest_confident_prefix_that_is_95_percent_right() -> None:
    labels = ["a"] * 20
    predictions = ["a"] * 19 + ["b"]      # one mistake, made at the lowest confidence
    confidences = [1 - i / 100 for i in range(20)]
    assert coverage_at_precision(labels, predictions, confidences) == 1.0  # 19/20 = 0.95 still counts
    predictions = ["b"] + ["a"] * 19      # the mistake is the most confident answer
    assert coverage_at_precision(labels, predictions, confidences) == 1.0   # 19/20 again at the full length
    predictions = ["b", "b"] + ["a"] * 18
    assert coverage_at_precision(labels, predictions, confidences) == 0.0   # never back above 95%


def test_abstentions_are_not_coverage_and_out_of_scope_guesses_are_wrong() -> None:
    labels = ["a", "a", "out_of_scope", "out_of_scope"]
    predictions = ["a", None, "a", "out_of_scope"]
    confidences = [0.9, 0.8, 0.7, 0.6]
    # Prefix [a✓] -> 1/1; [a✓, abstain] still 1 routed; [.., oos routed as a ✗] -> 1/2 < 95%.
    assert coverage_at_precision(labels, predictions, confidences) == pytest.approx(0.25)


def test_score_fields() -> None:
    labels = ["a", "b", "b", "out_of_scope"]
    predictions = ["a", "b", None, None]
    result = score(labels, predictions, [0.9, 0.8, 0.3, 0.2])
    assert result["n"] == 4
    assert result["accuracy"] == 0.75                # the abstention on out_of_scope is right
    assert result["macro_f1"] == pytest.approx((1.0 + 2 / 3) / 2)  # over a and b only
    assert result["coverage_at_95"] == 0.5
    assert result["out_of_scope_abstained"] == 1.0
    assert result["in_scope_accuracy"] == pytest.approx(2 / 3)
