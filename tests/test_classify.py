"""The cascade: guardrails, keyword rules, the local model, triage; and the model file format."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from connector.classify.cascade import Cascade
from connector.classify.local import LocalModel, ModelFormatError
from connector.classify.rules import RulesTier
from connector.mappings import load_taxonomy
from helpers import PROJECT

TAXONOMY = load_taxonomy(PROJECT / "mappings")
RULES = RulesTier(TAXONOMY)


def cascade(model: LocalModel | None, threshold: float = 0.75) -> Cascade:
    return Cascade(rules=RULES, local=model, threshold=threshold, model_version="local-vtest")


def test_keyword_rule_decides() -> None:
    result = RULES.classify("Please send a receipt for March")
    assert (result.category, result.confidence, result.reason) == ("billing", 0.95, "keyword 'receipt'")


def test_keywords_are_whole_words() -> None:
    assert RULES.classify("The rapid growth of our team").category is None  # "api" inside "rapid"


def test_keywords_of_two_categories_abstain() -> None:
    result = RULES.classify("I want a refund for the invoice")
    assert result.category is None and "billing" in result.reason and "refunds_cancellation" in result.reason


def test_rules_are_precise_on_the_taxonomy_examples() -> None:
    texts, labels = TAXONOMY.examples()
    fired = [(RULES.classify(t).category, y) for t, y in zip(texts, labels, strict=True)]
    decided = [(p, y) for p, y in fired if p is not None]
    assert len(decided) >= len(texts) * 0.3
    assert sum(p == y for p, y in decided) >= 0.95 * len(decided)


@pytest.mark.parametrize(("text", "guardrail"), [
    ("All our projects are gone after the sync, this is data loss!", "data_loss"),
    ("I think our account was compromised, someone logged in from Brazil", "security"),
    ("Under GDPR I request a copy of all data you hold on me", "legal_privacy"),
])
def test_guardrails_force_triage_with_a_best_guess(taxonomy_model: LocalModel, text: str, guardrail: str) -> None:
    c = cascade(taxonomy_model).classify(text)
    assert c.category is None and c.guardrail == guardrail and c.priority in ("high", "urgent")
    assert c.tiers[0].tier == "rules" and any(t.category for t in c.tiers)  # tiers still ran: a best guess


def test_confident_local_model_decides(taxonomy_model: LocalModel) -> None:
    c = cascade(taxonomy_model).classify("My password doesn't work and I can't get into my account")
    assert (c.category, c.tier) == ("account_access", "local")
    assert c.confidence >= 0.75 and c.model_version == "local-vtest"


def test_unsure_model_goes_to_triage(taxonomy_model: LocalModel) -> None:
    c = cascade(taxonomy_model).classify("What's the weather going to be like in Lisbon tomorrow?")
    assert c.category is None and c.tier == "triage"
    # With embeddings the model knows the ticket is unlike its examples; without, it is merely unsure.
    assert "unlike any example" in c.reason or ("not confident enough" in c.reason and c.confidence < 0.75)


def test_threshold_is_respected(taxonomy_model: LocalModel) -> None:
    text = "The board view shows the wrong tasks after I change the filter"
    assert cascade(taxonomy_model, threshold=0.5).classify(text).tier == "local"
    assert cascade(taxonomy_model, threshold=1.0).classify(text).tier == "triage"


def test_without_a_model_only_rules_decide() -> None:
    assert cascade(None).classify("Send me an invoice").category == "billing"
    assert cascade(None).classify("Something odd happened").tier == "triage"


def test_local_model_generalises_to_unseen_tickets(taxonomy_model: LocalModel) -> None:
    unseen = {
        "Can I get a copy of last month's bill with our company address on it?": "billing",
        "We no longer use the product, please end our plan and return the payment": "refunds_cancellation",
        "The page freezes when I click save on a task with attachments": "bug_report",
        "Nothing loads for anyone in our company right now, is it an incident on your side?": "outage_performance",
        "Would love a way to group tasks by client in the list view": "feature_request",
        "Our Slack channel stopped receiving task notifications": "integrations_api",
        "How do I give a new colleague access to our workspace?": "user_management",
    }
    predictions = [taxonomy_model.predict(text).label for text in unseen]
    assert sum(p == y for p, y in zip(predictions, unseen.values(), strict=True)) >= 5


def test_confidence_is_calibrated_on_held_out_examples() -> None:
    # Train on two thirds of the taxonomy examples; the held-out third's mean confidence should be
    # close to its accuracy (temperature scaling), not 1.0 for everything.
    texts, labels = TAXONOMY.examples()
    train = [i for i in range(len(texts)) if i % 3]
    held = [i for i in range(len(texts)) if not i % 3]
    model = LocalModel.train([texts[i] for i in train], [labels[i] for i in train])
    predictions = model.predict_many([texts[i] for i in held])
    accuracy = np.mean([p.top_label == labels[i] for p, i in zip(predictions, held, strict=True)])
    confidence = np.mean([p.confidence for p in predictions])
    assert abs(confidence - accuracy) < 0.15


def test_out_of_scope_label_means_abstain() -> None:
    texts = ["refund my money", "refund please", "I want a refund now", "give me a refund",
             "weather today", "tell me a joke", "what time is it", "play some music"]
    labels = ["refunds"] * 4 + ["out_of_scope"] * 4
    model = LocalModel.train(texts, labels)
    assert model.predict("please tell me a joke about music").label is None
    assert model.predict("I want my refund").label == "refunds"


def test_model_round_trips_through_bytes(taxonomy_model: LocalModel, tmp_path: Path) -> None:
    path = tmp_path / "m.model"
    taxonomy_model.save(path)
    loaded = LocalModel.load(path)
    text = "Our invoice has the wrong VAT number"
    assert loaded.labels == taxonomy_model.labels
    assert np.allclose(loaded.probabilities([text]), taxonomy_model.probabilities([text]), atol=1e-5)


def test_model_files_never_unpickle(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array([{"format": "deskroute-local/1"}], dtype=object))  # needs pickle to read
    path = tmp_path / "evil.model"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelFormatError):
        LocalModel.load(path)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFormatError):
        LocalModel.load(path)


def test_training_needs_two_categories() -> None:
    with pytest.raises(ValueError, match="at least two categories"):
        LocalModel.train(["a", "b"], ["x", "x"])
