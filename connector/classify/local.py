"""Tier 2: a local classifier, trained on this helpdesk's own examples.

TF-IDF over word 1-2-grams and character 2-5-grams, a linear SVM, and temperature scaling fitted on
out-of-fold scores so that the confidence means what it says (a 0.8 is right about 80% of the time).
A label named `out_of_scope` is learned like any other and predicted as an abstention.

Models are saved as a plain .npz archive (arrays and a JSON header) and loaded with
`allow_pickle=False`: a model file is data, and opening one can never run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

FORMAT = "deskroute-local/1"
OUT_OF_SCOPE = "out_of_scope"
# Feature extractors: (name, TfidfVectorizer parameters). Fixed here so a saved model rebuilds them exactly.
VECTORIZERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("word", {"analyzer": "word", "ngram_range": (1, 2), "sublinear_tf": True, "lowercase": True,
              "strip_accents": "unicode"}),
    ("char", {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True, "lowercase": True,
              "strip_accents": "unicode", "min_df": 2}),
)
SVM_C = 1.0
CV_FOLDS = 3


class ModelFormatError(ValueError):
    """The file is not a Deskroute model, or is damaged."""


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one text."""

    label: str | None  # None: the model abstains (out of scope)
    top_label: str
    confidence: float
    ranked: list[tuple[str, float]] = field(default_factory=list)


class LocalModel:
    """A trained local classifier."""

    def __init__(self, *, vectorizers: list[TfidfVectorizer], coef: np.ndarray, intercept: np.ndarray,
                 classes: list[str], temperature: float, meta: dict[str, Any]):
        self._vectorizers = vectorizers
        self._coef_t = np.ascontiguousarray(coef.T)
        self._coef = coef
        self._intercept = intercept
        self.classes = classes
        self.temperature = temperature
        self.meta = meta

    @property
    def labels(self) -> list[str]:
        """The labels this model can predict."""
        return list(self.classes)

    # --- training ------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: list[str], labels: list[str], *, seed: int = 0) -> LocalModel:
        """Fit on (text, label) pairs; needs at least two labels."""
        if len(texts) != len(labels):
            raise ValueError("texts and labels differ in length")
        counts = Counter(labels)
        if len(counts) < 2:
            raise ValueError("training needs examples of at least two categories")
        started = time.perf_counter()
        vectorizers = [TfidfVectorizer(**params) for _, params in VECTORIZERS]
        if len(texts) < 50:  # char n-grams seen twice would be almost none of them
            vectorizers[1].set_params(min_df=1)
        features = sparse.hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
        classes = sorted(counts)
        y = np.array([classes.index(label) for label in labels])

        temperature, cv_accuracy, cv_confusion = _calibrate(features, y, len(classes), seed)
        svm = LinearSVC(C=SVM_C, random_state=seed).fit(features, y)
        coef, intercept = _full_rank(svm.coef_, svm.intercept_)
        meta = {
            "format": FORMAT,
            "trained_at": time.time(),
            "n_examples": len(texts),
            "labels": classes,
            "label_counts": dict(sorted(counts.items())),
            "temperature": temperature,
            "cv_accuracy": cv_accuracy,
            "cv_confusion": cv_confusion,
            "train_seconds": round(time.perf_counter() - started, 3),
            "sklearn": sklearn.__version__,
            "data_sha256": hashlib.sha256("\x1e".join(f"{t}\x1f{y}" for t, y in zip(texts, labels, strict=True))
                                          .encode()).hexdigest(),
        }
        return cls(vectorizers=vectorizers, coef=coef.astype(np.float32), intercept=intercept.astype(np.float32),
                   classes=classes, temperature=temperature, meta=meta)

    # --- prediction ----------------------------------------------------------------------------

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Calibrated class probabilities, one row per text, columns in `classes` order."""
        features = sparse.hstack([v.transform(texts) for v in self._vectorizers], format="csr", dtype=np.float32)
        # Same dtype as the weights, or scipy copies the whole weight matrix to float64 on every call.
        scores = features @ self._coef_t + self._intercept
        return softmax(np.asarray(scores, dtype=np.float64) / self.temperature, axis=1)

    def predict_many(self, texts: list[str], *, top: int = 3) -> list[Prediction]:
        """Predictions for many texts at once."""
        results = []
        for row in self.probabilities(texts):
            order = np.argsort(-row)[:top]
            ranked = [(self.classes[i], float(row[i])) for i in order]
            best, confidence = ranked[0]
            results.append(Prediction(label=None if best == OUT_OF_SCOPE else best, top_label=best,
                                      confidence=confidence, ranked=ranked))
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
            "coef": self._coef,
            "intercept": self._intercept,
        }
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
            if meta.get("format") != FORMAT:
                raise ModelFormatError(f"unsupported model format {meta.get('format')!r}; expected {FORMAT}")
            classes = [str(c) for c in archive["classes"]]
            coef, intercept = archive["coef"], archive["intercept"]
            vectorizers = []
            for name, params in VECTORIZERS:
                terms = [str(t) for t in archive[f"{name}_terms"]]
                vectorizer = TfidfVectorizer(**{**params, "min_df": 1}, vocabulary=terms)
                vectorizer.idf_ = archive[f"{name}_idf"]
                vectorizers.append(vectorizer)
        except ModelFormatError:
            raise
        except Exception as exc:  # anything a damaged or foreign file makes numpy or zipfile raise
            raise ModelFormatError(f"not a Deskroute model file: {exc}") from exc
        n_features = sum(len(v.vocabulary_) for v in vectorizers)
        if coef.shape != (len(classes), n_features) or intercept.shape != (len(classes),):
            raise ModelFormatError("model arrays have inconsistent shapes")
        return cls(vectorizers=vectorizers, coef=coef, intercept=intercept, classes=classes,
                   temperature=float(meta["temperature"]), meta=meta)

    def save(self, path: Path) -> None:
        """Write the model to a file."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> LocalModel:
        """Read a model file."""
        return cls.from_bytes(Path(path).read_bytes())


def _full_rank(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row per class: a binary SVM gives one row, which becomes two opposite halves."""
    if coef.shape[0] == 1:
        return np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    return coef, intercept


def _calibrate(features: sparse.csr_matrix, y: np.ndarray, n_classes: int,
               seed: int) -> tuple[float, float | None, list[list[int]] | None]:
    """Fit the softmax temperature on out-of-fold SVM scores.

    Returns (temperature, out-of-fold accuracy, out-of-fold confusion matrix [true][predicted]).
    """
    folds = min(CV_FOLDS, int(np.bincount(y).min()))
    if folds < 2:
        return 0.2, None, None  # too few examples per class to measure; a moderate, conservative default
    scores = np.zeros((len(y), n_classes))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
        svm = LinearSVC(C=SVM_C, random_state=seed).fit(features[train_idx], y[train_idx])
        coef, intercept = _full_rank(svm.coef_, svm.intercept_)
        # Stratified folds with >= `folds` examples per class give every fold every class.
        scores[test_idx] = features[test_idx] @ coef.T + intercept
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-log_softmax(scores / np.exp(log_t), axis=1)[rows, y].mean())

    best = minimize_scalar(nll, bounds=(-6.0, 3.0), method="bounded")
    predicted = scores.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (y, predicted), 1)
    return float(np.exp(best.x)), float((predicted == y).mean()), confusion.tolist()
