"""Tier 2: a local classifier, trained on this helpdesk's own examples.

Two heads, mixed with equal weights: logistic regression on TF-IDF word 1-2-grams and character
2-5-grams (always), and logistic regression on MiniLM sentence embeddings (when the [embeddings] extra
is installed). What is fitted rather than fixed comes from out-of-fold predictions over the training
data, never from a test set: a softmax temperature so that a 0.8 is right about 80% of the time, how far
the decision leans away from the big categories (the prior adjustment), one abstention threshold per
class, and the novelty floor. A label named `out_of_scope` is learned like
any other and predicted as an abstention; below its class's threshold, or unlike every training
example, the model abstains too, so such a ticket gets no category rather than a confident guess.

Models are saved as a plain .npz archive (arrays and a JSON header) and loaded with
`allow_pickle=False`: a model file is data, and opening one can never run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from joblib import Parallel, delayed
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from connector.classify import embeddings
from connector.classify.clean import clean
from connector.models import OUT_OF_SCOPE

log = logging.getLogger(__name__)

FORMAT = "deskroute-local/2"
OLD_FORMATS = ("deskroute-local/1",)  # TF-IDF + SVM, no thresholds: still loads
# Feature extractors: (name, TfidfVectorizer parameters). Fixed here so a saved model rebuilds them exactly.
VECTORIZERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("word", {"analyzer": "word", "ngram_range": (1, 2), "sublinear_tf": True, "lowercase": True,
              "strip_accents": "unicode"}),
    ("char", {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True, "lowercase": True,
              "strip_accents": "unicode", "min_df": 2}),
)
# Regularisation of each head. Fixed rather than searched: docs/local-model.md shows these are near
# the best for every dataset we have, and a search would multiply the training time.
TFIDF_C = 30.0
EMBEDDING_C = 10.0
CV_FOLDS = 3
# The heads' weights in the mix. Chosen out of fold, the weight leaned towards the embedding head on
# every dataset, because TF-IDF gains more from the third of the data a fold leaves out; equal
# weights did better on unseen data (docs/local-model.md).
EMBEDDING_WEIGHT = 0.5
PARALLEL_FROM = 2000  # examples; below this, starting worker processes costs more than it saves
# From this many examples one held-out third (one fit on two thirds) stands in for the three folds, whose
# fits are most of a large training's time: on 20,000 examples it trains in 0.65x the time (160 s against
# 246 s). Not lower: on clinc150 (15,100 examples) it kept accuracy and coverage but abstained on 74% of
# out-of-scope queries against 75% (docs/local-model.md, Training time; bench/holdout.py).
HOLDOUT_FROM = 16_000
# Abstain where a wrong answer is at least this many times likelier than a right one. A misroute
# costs an agent a re-route; an abstention costs a Claude call or a triage look, so we abstain only
# where the model is mostly wrong.
ABSTAIN_ODDS = 4.0
# A class's own threshold is shrunk towards the all-class one as if it had this many more examples.
THRESHOLD_PRIOR = 30
# A category with fewer examples than this is learned (its examples still shape the others' boundaries)
# but never answered on its own: one or two examples are no evidence of what the category is, and out
# of fold such a category is absent from most folds, so nothing says when to trust it.
MIN_EXAMPLES = 3
# Imbalance (real helpdesks: one team takes half the tickets). The probabilities stay those of an
# unweighted fit, calibrated to how often each category really comes, so that a 0.9 means the same in
# a big and a small category and the most-confident-first order stays honest. Only the decision leans
# away from the big categories: argmax of log p(c|x) - tau * log prior(c) (logit adjustment, Menon et
# al. 2021), and the confidence reported is the calibrated probability of the category chosen. tau is
# picked out of fold from these values, by accuracy, the smallest on a tie; on a balanced dataset the
# prior is flat and tau changes nothing. Class-weighted fits (balanced, or n^-0.5) were tried instead:
# they raised macro-F1 but inflated the small categories' probabilities, and coverage at 95% precision
# fell by a third (docs/local-model.md).
PRIOR_TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Novelty. Calibrated probabilities can't tell an alien ticket from a familiar one (a temperature fitted
# on familiar tickets sharpens an alien one's faint preference into a confident guess). With sentence
# embeddings: a ticket less similar to every category's centroid than all but this share of training
# tickets are to their own category's centroid (left out of it) is unlike all the examples. Without
# them: a ticket whose share of known words is below what all but this share of training tickets
# reach (their own unique words counted as unknown).
NOVELTY_QUANTILE = 0.001


class ModelFormatError(ValueError):
    """The file is not a Deskroute model, or is damaged."""


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one text."""

    label: str | None  # None: the model abstains (out of scope, or below its class's threshold)
    top_label: str
    confidence: float
    ranked: list[tuple[str, float]] = field(default_factory=list)
    threshold: float = 0.0  # the top label's abstention threshold (1.0: a category the model never answers alone)
    novel: bool = False  # unlike every training example, whatever the probabilities say


@dataclass
class Head:
    """One linear classifier over one kind of features: softmax(x @ coef.T + intercept)."""

    coef: np.ndarray  # (classes, features), float32
    intercept: np.ndarray  # (classes,), float32

    def __post_init__(self) -> None:
        self._coef_t = np.ascontiguousarray(self.coef.T)

    def scores(self, features: Any) -> np.ndarray:
        # Same dtype as the weights, or scipy copies the whole weight matrix to float64 on every call.
        return np.asarray(features @ self._coef_t + self.intercept, dtype=np.float64)

    def log_proba(self, features: Any) -> np.ndarray:
        return log_softmax(self.scores(features), axis=1)


def _without_single_ticket_terms(vectorizer: TfidfVectorizer, matrix: sparse.csr_matrix, params: dict[str, Any],
                                 texts: list[str], private: Sequence[bool]) -> tuple[TfidfVectorizer, Any]:
    """Refit on the terms that occur in an admin's text (an example) or in at least two tickets."""
    mask = np.asarray(private, dtype=bool)
    present = (matrix != 0).astype(np.int32)
    # One ticket may come twice (an accepted correction, and again from a history import): count texts once.
    first: dict[str, int] = {}
    for i, (text, is_ticket) in enumerate(zip(texts, private, strict=True)):
        if is_ticket:
            first.setdefault(text, i)
    in_tickets = np.asarray(present[sorted(first.values())].sum(axis=0)).ravel()
    in_examples = np.asarray(present[~mask].sum(axis=0)).ravel()
    keep = (in_examples >= 1) | (in_tickets >= 2)
    if keep.all():
        return vectorizer, matrix
    terms = vectorizer.get_feature_names_out()[keep]
    refit = TfidfVectorizer(**{**params, "min_df": 1}, vocabulary=list(terms))
    return refit, refit.fit_transform(texts)


class _Extractor:
    """A fitted TfidfVectorizer's transform for a few texts at a time, without its per-call overhead
    (about 1 ms per vectorizer, a fifth of the single-ticket budget). Same numbers: sublinear tf, idf, l2."""

    def __init__(self, vectorizer: TfidfVectorizer):
        self._analyze = vectorizer.build_analyzer()
        self._vocabulary = vectorizer.vocabulary_
        self._idf = np.asarray(vectorizer.idf_, dtype=np.float32)

    def known_share(self, texts: list[str], n_docs: int, *, leave_out: bool = False) -> np.ndarray:
        """Per text: the idf-weighted share of its words that the training texts used. With leave_out
        (for the training texts themselves), a word only this text used counts as unknown."""
        # Weights are idf - 1 = log((1 + n) / (1 + df)): a word every text has ("the") weighs nothing.
        unknown = np.log(1 + n_docs)  # a word no text has
        # With leave_out, a word must be in two texts or more (df > 1.5): its weight is below this.
        most = np.log((1 + n_docs) / 2.5) if leave_out else np.inf
        shares = np.zeros(len(texts))
        for row, text in enumerate(texts):
            known = total = 0.0
            for term in self._analyze(text):
                if " " in term:  # bigrams add nothing the words don't say
                    continue
                i = self._vocabulary.get(term)
                weight = float(self._idf[i]) - 1 if i is not None else unknown
                if i is not None and weight < most:
                    known += weight
                    total += weight
                else:
                    total += unknown
            shares[row] = known / total if total else 0.0
        return shares

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        indptr: list[int] = [0]
        indices: list[int] = []
        counts: list[int] = []
        for text in texts:
            row = Counter(i for term in self._analyze(text) if (i := self._vocabulary.get(term)) is not None)
            indices.extend(row)
            counts.extend(row.values())
            indptr.append(len(indices))
        index = np.asarray(indices, dtype=np.int32)
        values = (1 + np.log(np.asarray(counts, dtype=np.float32))) * self._idf[index]
        rows = np.repeat(np.arange(len(texts)), np.diff(indptr))
        norms = np.sqrt(np.bincount(rows, weights=values ** 2, minlength=len(texts)))
        values /= norms[rows].astype(np.float32)  # every row with a value has a norm above zero
        return sparse.csr_matrix((values, index, np.asarray(indptr)), shape=(len(texts), len(self._idf)))


class LocalModel:
    """A trained local classifier."""

    def __init__(self, *, vectorizers: list[TfidfVectorizer], heads: dict[str, Head], classes: list[str],
                 embedding_weight: float, temperature: float, thresholds: np.ndarray, meta: dict[str, Any],
                 centroids: np.ndarray | None = None, novelty_floor: float = 0.0, word_floor: float = 0.0,
                 offsets: np.ndarray | None = None):
        self._vectorizers = vectorizers
        self._extractors = [_Extractor(v) for v in vectorizers]
        self._heads = heads
        self.classes = classes
        self.embedding_weight = embedding_weight if "embedding" in heads else 0.0
        self.temperature = temperature
        self.thresholds = thresholds
        self._centroids = centroids if self.embedding_weight > 0 else None
        self.novelty_floor = novelty_floor
        self.word_floor = word_floor
        # Added to the log-probabilities for the decision only (-tau * log prior); zeros for older models.
        self.offsets = np.zeros(len(classes)) if offsets is None else np.asarray(offsets, dtype=np.float64)
        self.meta = meta

    @property
    def labels(self) -> list[str]:
        """The labels this model can predict."""
        return list(self.classes)

    @property
    def uses_embeddings(self) -> bool:
        return self.embedding_weight > 0

    # --- training ------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: list[str], labels: list[str], *, seed: int = 0,
              use_embeddings: bool | None = None, private: Sequence[bool] | None = None) -> LocalModel:
        """Fit on (text, label) pairs; needs at least two labels.

        use_embeddings: None uses the embedding head when the [embeddings] extra is installed.
        private: which texts are customers' tickets. The vocabulary keeps a term from those only when
            it occurs in two of them or more, so that a name, an address or a password typed in one
            ticket never lives on in a stored model. (None: every text is the admin's own.)
        """
        if len(texts) != len(labels):
            raise ValueError("texts and labels differ in length")
        counts = Counter(labels)
        if len(counts) < 2:
            raise ValueError("training needs examples of at least two categories")
        started = time.perf_counter()
        if use_embeddings is None:
            use_embeddings = embeddings.available()
        cleaned = [clean(t) for t in texts]
        vectorizers = [TfidfVectorizer(**params) for _, params in VECTORIZERS]
        if len(texts) < 50:  # char n-grams seen twice would be almost none of them
            vectorizers[1].set_params(min_df=1)
        if len(texts) >= 1000:  # words and word pairs seen once: half the features, no accuracy, twice the time
            vectorizers[0].set_params(min_df=2)
        matrices = [v.fit_transform(cleaned) for v in vectorizers]
        if private is not None and any(private):
            for i, (_, params) in enumerate(VECTORIZERS):
                vectorizers[i], matrices[i] = _without_single_ticket_terms(vectorizers[i], matrices[i], params,
                                                                           cleaned, private)
        features = {"tfidf": sparse.hstack(matrices, format="csr", dtype=np.float64)}
        if use_embeddings:
            features["embedding"] = embeddings.embedder().embed(cleaned).astype(np.float64)
        classes = sorted(counts)
        y = np.array([classes.index(label) for label in labels])
        n_classes = len(classes)

        # Folds as soon as some category can fill them: a category with one or two examples sits out some
        # folds (its held-out tickets then go to the others, which is what its few examples earn), but no
        # longer switches calibration and thresholds off for every category, as a rule of "the smallest
        # category decides" did on real, imbalanced data.
        folds = min(CV_FOLDS, int(np.bincount(y).max()))
        with warnings.catch_warnings():  # "the least populated class has only 1 member": known and wanted
            warnings.simplefilter("ignore", UserWarning)
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)) if folds >= 2 else []
        # A fold left with one category to train on (two categories, one with a single example) can't be fitted:
        # without every fold, no out-of-fold answers.
        if any(len(np.unique(y[train_idx])) < 2 for train_idx, _ in splits):
            splits = []
        if len(y) >= HOLDOUT_FROM:
            splits = splits[:1]
        everything = np.arange(len(y))
        jobs = [(name, train_idx, test_idx) for name in features for train_idx, test_idx in splits]
        jobs += [(name, everything, None) for name in features]
        # The folds and the final fits are independent: run them on both cores, in processes because
        # the solver holds the GIL (threads gave no speed-up; processes 1.7x).
        workers = 2 if len(y) >= PARALLEL_FROM else 1
        fitted = Parallel(n_jobs=workers)(
            delayed(_fit_head)(features[name], y, train_idx, n_classes, seed) for name, train_idx, _ in jobs)
        heads = {name: head for (name, _, test_idx), head in zip(jobs, fitted, strict=True) if test_idx is None}

        weight = EMBEDDING_WEIGHT if use_embeddings else 0.0
        temperature, thresholds, cv, tau = 1.0, np.zeros(n_classes), {}, 0.0
        log_prior = np.log(np.bincount(y, minlength=n_classes) / len(y))
        centroids, floor = _centroids(features["embedding"], y, classes) if use_embeddings else (None, 0.0)
        word_floor = _word_floor(_Extractor(vectorizers[0]), cleaned, y, classes)
        if splits:
            oof = {name: np.zeros((len(y), n_classes)) for name in features}
            for (name, _, test_idx), head in zip(jobs, fitted, strict=True):
                if test_idx is not None:
                    oof[name][test_idx] = head.log_proba(features[name][test_idx])
            # A held-out ticket whose category its fold never saw (one with a single example) can only be
            # wrong: it says nothing of how far to trust the model, and would flatten the temperature.
            held, seen = np.zeros(len(y), dtype=bool), np.zeros(len(y), dtype=bool)
            for train_idx, test_idx in splits:
                held[test_idx] = True
                seen[test_idx] = np.isin(y[test_idx], y[train_idx])
            mixed = _mix(oof, weight)
            temperature = _fit_temperature(mixed[seen], y[seen])
            probabilities = softmax(mixed / temperature, axis=1)
            tau = _fit_tau(probabilities[seen], y[seen], log_prior)
            thresholds = _fit_thresholds(probabilities[seen], y[seen], classes, -tau * log_prior)
            # Every held-out ticket, as agents would see them
            cv = _cv_report(probabilities[held], y[held], thresholds, classes, -tau * log_prior)
        thresholds = np.maximum(thresholds, min(0.5, 1.5 / n_classes))  # near-uniform is no answer at all
        small = np.bincount(y, minlength=n_classes) < MIN_EXAMPLES
        if splits and not small.all():  # with no category past the bar, the model would never answer at all
            thresholds[small] = 1.0
        meta = {
            "format": FORMAT,
            "trained_at": time.time(),
            "n_examples": len(texts),
            "labels": classes,
            "label_counts": dict(sorted(counts.items())),
            "embedding_model": embeddings.NAME if use_embeddings else None,
            "embedding_weight": weight,
            "temperature": temperature,
            "prior_tau": tau,
            "cv_folds": len(splits),
            **cv,
            "train_seconds": round(time.perf_counter() - started, 3),
            "sklearn": sklearn.__version__,
            "data_sha256": hashlib.sha256("\x1e".join(f"{t}\x1f{y}" for t, y in zip(texts, labels, strict=True))
                                          .encode()).hexdigest(),
        }
        meta.update(novelty_floor=floor, word_floor=word_floor)
        return cls(vectorizers=vectorizers, heads=heads, classes=classes, embedding_weight=weight,
                   temperature=temperature, thresholds=thresholds, meta=meta, centroids=centroids,
                   novelty_floor=floor, word_floor=word_floor, offsets=-tau * log_prior)

    # --- prediction ----------------------------------------------------------------------------

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Calibrated class probabilities, one row per text, columns in `classes` order."""
        return self._scores(texts)[0]

    def _scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities, whether each text is novel)."""
        cleaned = [clean(t) for t in texts]
        log_probas = {"tfidf": self._heads["tfidf"].log_proba(
            sparse.hstack([e.transform(cleaned) for e in self._extractors], format="csr"))}
        if self._centroids is not None:
            vectors = embeddings.embedder().embed(cleaned)
            log_probas["embedding"] = self._heads["embedding"].log_proba(vectors)
            novel = (vectors @ self._centroids.T).max(axis=1) < self.novelty_floor
        else:
            novel = self._extractors[0].known_share(cleaned, self.meta["n_examples"]) < self.word_floor
        return softmax(_mix(log_probas, self.embedding_weight) / self.temperature, axis=1), novel

    def predict_many(self, texts: list[str], *, top: int = 3) -> list[Prediction]:
        """Predictions for many texts at once."""
        results = []
        probabilities, novel = self._scores(texts)
        decisions = _decision_scores(probabilities, self.offsets)
        for row, decision, is_novel in zip(probabilities, decisions, novel, strict=True):
            # Ranked by the decision (the prior-adjusted score), each with its calibrated probability.
            order = np.argsort(-decision)[:top]
            ranked = [(self.classes[i], float(row[i])) for i in order]
            best, confidence = ranked[0]
            threshold = float(self.thresholds[order[0]])
            abstain = best == OUT_OF_SCOPE or confidence < threshold or threshold >= 1.0 or is_novel
            results.append(Prediction(label=None if abstain else best, top_label=best, confidence=confidence,
                                      ranked=ranked, threshold=threshold, novel=bool(is_novel)))
        return results

    def predict(self, text: str) -> Prediction:
        """The prediction for one text."""
        return self.predict_many([text])[0]

    # --- persistence ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise to a .npz archive of plain arrays (no pickles)."""
        arrays: dict[str, np.ndarray] = {
            "header": np.array(json.dumps(self.meta)),
            "classes": np.array(self.classes),
            "thresholds": self.thresholds.astype(np.float64),
            "offsets": self.offsets.astype(np.float64),
        }
        for name, head in self._heads.items():
            arrays[f"{name}_coef"] = head.coef
            arrays[f"{name}_intercept"] = head.intercept
        if self._centroids is not None:
            arrays["centroids"] = self._centroids
        for (name, _), vectorizer in zip(VECTORIZERS, self._vectorizers, strict=True):
            vocabulary = vectorizer.vocabulary_
            arrays[f"{name}_terms"] = np.array(sorted(vocabulary, key=vocabulary.__getitem__))
            arrays[f"{name}_idf"] = vectorizer.idf_.astype(np.float64)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalModel:
        """Load what to_bytes wrote; raises ModelFormatError for anything else."""
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
            meta = json.loads(str(archive["header"]))
            version = meta.get("format")
            if version != FORMAT and version not in OLD_FORMATS:
                raise ModelFormatError(f"unsupported model format {version!r}; expected {FORMAT}")
            classes = [str(c) for c in archive["classes"]]
            vectorizers = []
            for name, params in VECTORIZERS:
                terms = [str(t) for t in archive[f"{name}_terms"]]
                vectorizer = TfidfVectorizer(**{**params, "min_df": 1}, vocabulary=terms)
                vectorizer.idf_ = archive[f"{name}_idf"]
                vectorizers.append(vectorizer)
            if version == FORMAT:
                heads = {name: Head(archive[f"{name}_coef"], archive[f"{name}_intercept"])
                         for name in ("tfidf", "embedding") if f"{name}_coef" in archive.files}
                thresholds = archive["thresholds"]
                centroids = archive["centroids"] if "centroids" in archive.files else None
                # Absent from models saved before the prior adjustment: they decide by plain argmax.
                offsets = archive["offsets"] if "offsets" in archive.files else None
            else:  # format 1: an SVM's scores divided by a temperature, the same softmax
                temperature = float(meta["temperature"])
                heads = {"tfidf": Head(archive["coef"] / temperature, archive["intercept"] / temperature)}
                meta = {**meta, "temperature": 1.0}
                thresholds = np.zeros(len(classes))
                centroids = None
                offsets = None
        except ModelFormatError:
            raise
        except Exception as exc:  # anything a damaged or foreign file makes numpy or zipfile raise
            raise ModelFormatError(f"not a Deskroute model file: {exc}") from exc
        n_features = sum(len(v.vocabulary_) for v in vectorizers)
        expected = {"tfidf": n_features, "embedding": embeddings.DIMENSIONS}
        for name, head in heads.items():
            if head.coef.shape != (len(classes), expected[name]) or head.intercept.shape != (len(classes),):
                raise ModelFormatError("model arrays have inconsistent shapes")
        if "tfidf" not in heads or thresholds.shape != (len(classes),) or (
                offsets is not None and offsets.shape != (len(classes),)):
            raise ModelFormatError("model arrays are missing or have inconsistent shapes")
        weight = float(meta.get("embedding_weight") or 0.0)
        if "embedding" in heads and not embeddings.available():
            log.warning("model was trained with sentence embeddings, but the [embeddings] extra is not installed;"
                        " using its TF-IDF head alone, which is less accurate")
            weight = 0.0
        if centroids is not None and (centroids.ndim != 2 or centroids.shape[1] != embeddings.DIMENSIONS):
            raise ModelFormatError("model arrays have inconsistent shapes")
        return cls(vectorizers=vectorizers, heads=heads, classes=classes, embedding_weight=weight,
                   temperature=float(meta["temperature"]), thresholds=thresholds, meta=meta, centroids=centroids,
                   novelty_floor=float(meta.get("novelty_floor") or 0.0),
                   word_floor=float(meta.get("word_floor") or 0.0), offsets=offsets)

    def save(self, path: Path) -> None:
        """Write the model to a file."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> LocalModel:
        """Read a model file."""
        return cls.from_bytes(Path(path).read_bytes())


# --- fitting helpers -----------------------------------------------------------------------------

def _fit_head(features: Any, y: np.ndarray, rows: np.ndarray, n_classes: int, seed: int) -> Head:
    """Multinomial logistic regression on some rows; a class missing from them gets a row of -inf odds."""
    c = TFIDF_C if sparse.issparse(features) else EMBEDDING_C
    with warnings.catch_warnings():  # 300 iterations is plenty for the ranking we need
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=c, max_iter=300, random_state=seed).fit(features[rows], y[rows])
    coef = np.zeros((n_classes, features.shape[1]), dtype=np.float32)
    intercept = np.full(n_classes, -30.0, dtype=np.float32)
    present = model.classes_
    if len(present) == 2:  # sklearn gives one row for two classes: split it into opposite halves
        coef[present] = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
        intercept[present] = [-model.intercept_[0] / 2, model.intercept_[0] / 2]
    else:
        coef[present] = model.coef_
        intercept[present] = model.intercept_
    return Head(coef, intercept)


def _centroids(vectors: np.ndarray, y: np.ndarray, classes: list[str]) -> tuple[np.ndarray, float]:
    """Unit centroids of the in-scope categories' embeddings, and the novelty floor: the similarity to
    the nearest centroid that all but NOVELTY_QUANTILE of training tickets beat, each measured with
    itself left out of its own category's centroid (exactly, from the sums)."""
    in_scope = [c for c, name in enumerate(classes) if name != OUT_OF_SCOPE]
    sums = np.vstack([vectors[y == c].sum(axis=0) for c in in_scope])
    norms = np.linalg.norm(sums, axis=1)
    rows = np.flatnonzero(np.isin(y, in_scope))
    own = np.searchsorted(in_scope, y[rows])
    dots = vectors[rows] @ sums.T
    similarity = dots / norms
    own_dot = dots[np.arange(len(rows)), own]
    left_out = np.sqrt(np.maximum(norms[own] ** 2 - 2 * own_dot + 1, 1e-12))  # |sum - x| with |x| = 1
    single = np.bincount(own, minlength=len(in_scope))[own] == 1  # alone in its category: nothing to compare
    similarity[np.arange(len(rows)), own] = np.where(single, -1.0, (own_dot - 1) / left_out)
    floor = float(np.quantile(similarity.max(axis=1), NOVELTY_QUANTILE))
    return (sums / norms[:, None]).astype(np.float32), floor


def _word_floor(extractor: _Extractor, texts: list[str], y: np.ndarray, classes: list[str]) -> float:
    """The known-word share that all but NOVELTY_QUANTILE of the in-scope training texts reach, each
    with the words only it used counted as unknown."""
    in_scope = y != classes.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in classes else np.ones(len(y), dtype=bool)
    shares = extractor.known_share([t for t, keep in zip(texts, in_scope, strict=True) if keep], len(texts),
                                   leave_out=True)
    return float(np.quantile(shares, NOVELTY_QUANTILE)) if len(shares) else 0.0


def _mix(log_probas: dict[str, np.ndarray], weight: float) -> np.ndarray:
    """The heads' log-probabilities, weighted (a product of experts: a label both heads find likely
    beats one that only one head likes); the temperature and softmax that follow renormalise."""
    if "embedding" not in log_probas or weight <= 0:
        return log_probas["tfidf"]
    return (1 - weight) * log_probas["tfidf"] + weight * log_probas["embedding"]


def _nll(log_probas: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(log_probas, axis=1)[np.arange(len(y)), y].mean())


def _fit_temperature(log_probas: np.ndarray, y: np.ndarray) -> float:
    best = minimize_scalar(lambda log_t: _nll(log_probas / np.exp(log_t), y), bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(best.x))


def _best_cut(confidence: np.ndarray, right: np.ndarray) -> float:
    """The threshold below which abstaining gains most: each wrong answer removed counts 1, each right
    one lost counts ABSTAIN_ODDS. 0.0 when no cut gains at least 2."""
    order = np.argsort(confidence)
    gain = np.cumsum(np.where(right[order], -ABSTAIN_ODDS, 1.0))
    if len(gain) == 0 or gain.max() < 2:  # one stray mistake at the bottom is no pattern
        return 0.0
    k = int(gain.argmax())
    upper = confidence[order[k + 1]] if k + 1 < len(order) else confidence[order[k]] + 1e-6
    return float((confidence[order[k]] + upper) / 2)


def _decision_scores(probabilities: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """What the decision ranks categories by: log p(c|x) plus the prior adjustment (-tau * log prior)."""
    return np.log(np.maximum(probabilities, 1e-300)) + offsets


def _decide(probabilities: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The category chosen for each row (prior-adjusted) and its calibrated probability."""
    predicted = _decision_scores(probabilities, offsets).argmax(axis=1)
    return predicted, probabilities[np.arange(len(predicted)), predicted]


def _fit_tau(probabilities: np.ndarray, y: np.ndarray, log_prior: np.ndarray) -> float:
    """The prior adjustment with the best out-of-fold accuracy; the smallest wins a tie (within one
    ticket in a thousand), so a balanced dataset keeps plain argmax."""
    accuracy = [float((_decide(probabilities, -tau * log_prior)[0] == y).mean()) for tau in PRIOR_TAUS]
    best = max(accuracy)
    return next(tau for tau, a in zip(PRIOR_TAUS, accuracy, strict=True) if a >= best - 0.001)


def _fit_thresholds(probabilities: np.ndarray, y: np.ndarray, classes: list[str],
                    offsets: np.ndarray | None = None) -> np.ndarray:
    """One abstention threshold per class, from out-of-fold answers, shrunk towards the all-class one."""
    predicted, confidence = _decide(probabilities, np.zeros(len(classes)) if offsets is None else offsets)
    right = predicted == y
    if OUT_OF_SCOPE in classes:  # an out-of-scope ticket answered out_of_scope is an abstention, not a routing
        answered = predicted != classes.index(OUT_OF_SCOPE)
        predicted, confidence, right = predicted[answered], confidence[answered], right[answered]
    overall = _best_cut(confidence, right)
    thresholds = np.full(len(classes), overall)
    for c in range(len(classes)):
        mine = predicted == c
        n = int(mine.sum())
        if n:
            thresholds[c] = (n * _best_cut(confidence[mine], right[mine]) + THRESHOLD_PRIOR * overall) / (
                n + THRESHOLD_PRIOR)
    return thresholds


def _cv_report(probabilities: np.ndarray, y: np.ndarray, thresholds: np.ndarray,
               classes: list[str], offsets: np.ndarray) -> dict[str, Any]:
    """Out-of-fold accuracy, abstention rate and confusion matrix [true][predicted], for the admin UI."""
    predicted, confidence = _decide(probabilities, offsets)
    abstained = confidence < thresholds[predicted]
    if OUT_OF_SCOPE in classes:
        abstained |= predicted == classes.index(OUT_OF_SCOPE)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (y, predicted), 1)
    return {"cv_accuracy": float((predicted == y).mean()), "cv_abstained": float(abstained.mean()),
            "cv_confusion": confusion.tolist()}
