"""The local model's recipe against the variants tried and not kept (docs/local-model.md, "Second round").

    python bench/recipe_variants.py [--data ../shared/data] [--only itgroups,banking77,clinc150]

Needs the [embeddings] extra. For each dataset, the heads are fitted once, as `LocalModel.train` fits them
(the same features, folds and solver), and the variants are scored from those fits on the dev split with
connector/classify/evaluation.py: what changes is only how the heads' answers are mixed, calibrated,
ranked or declared novel. A run takes a few minutes per dataset on two cores.

Rows: the shipped recipe; kNN experts mixed in; the fold models' weights averaged in (bagging); per-class
calibration of the confidence; and, on a dataset with out_of_scope rows, other novelty scores at three
training quantiles, plus the "20% out of scope" view of bench/accuracy.py for the shipped recipe.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy import sparse
from scipy.special import log_softmax, logsumexp, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accuracy import OOS_SHARE, with_oos_share  # noqa: E402
from connector.classify import embeddings, local  # noqa: E402
from connector.classify.clean import clean  # noqa: E402
from connector.classify.evaluation import score  # noqa: E402
from connector.datasets import load_dataset  # noqa: E402
from connector.models import OUT_OF_SCOPE  # noqa: E402

QUANTILES = (0.001, 0.003, 0.01)


class Fits:
    """One dataset's features and head fits: out of fold on train, and on dev from the fold and full fits."""

    def __init__(self, folder: Path):
        train, dev = load_dataset(folder / "train.csv"), load_dataset(folder / "dev.csv")
        texts, dev_texts = [clean(t) for t in train.texts], [clean(t) for t in dev.texts]
        self.classes = sorted(set(train.labels))
        self.y = np.array([self.classes.index(label) for label in train.labels])
        self.dev_labels = list(dev.labels)
        vectorizers = [TfidfVectorizer(**params) for _, params in local.VECTORIZERS]
        if len(texts) >= 1000:
            vectorizers[0].set_params(min_df=2)
        tfidf = sparse.hstack([v.fit_transform(texts) for v in vectorizers], format="csr", dtype=np.float64)
        tfidf_dev = sparse.hstack([v.transform(dev_texts) for v in vectorizers], format="csr", dtype=np.float64)
        embedder = embeddings.embedder()
        self.features = {"tfidf": (tfidf, tfidf_dev),
                         "embedding": (embedder.embed(texts).astype(np.float64),
                                       embedder.embed(dev_texts).astype(np.float64))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            folds = min(local.CV_FOLDS, int(np.bincount(self.y).max()))
            self.splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(self.y, self.y))
        n = len(self.classes)
        jobs = [(name, rows, held) for name in self.features for rows, held in self.splits]
        jobs += [(name, np.arange(len(self.y)), None) for name in self.features]
        heads = Parallel(n_jobs=2)(delayed(local._fit_head)(self.features[name][0], self.y, rows, n, 0)
                                   for name, rows, _ in jobs)
        self.oof = {name: np.zeros((len(self.y), n)) for name in self.features}
        self.dev: dict[str, np.ndarray] = {}
        self.fold_dev: dict[str, list[np.ndarray]] = {name: [] for name in self.features}
        for (name, _, held), head in zip(jobs, heads, strict=True):
            if held is None:
                self.dev[name] = head.log_proba(self.features[name][1])
            else:
                self.oof[name][held] = head.log_proba(self.features[name][0][held])
                self.fold_dev[name].append(head.scores(self.features[name][1]))
        self.seen = np.zeros(len(self.y), dtype=bool)
        for rows, held in self.splits:
            self.seen[held] = np.isin(self.y[held], self.y[rows])

    @property
    def in_scope(self) -> np.ndarray:
        return np.array([c != OUT_OF_SCOPE for c in self.classes])[self.y]


def mixed(log_probas: dict[str, np.ndarray]) -> np.ndarray:
    return local._mix(log_probas, local.EMBEDDING_WEIGHT)


def run(fits: Fits, oof: np.ndarray, dev: np.ndarray, novel: np.ndarray, *, seen: np.ndarray | None = None,
        confidence: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
        ) -> tuple[dict[str, float], list[str | None], list[float]]:
    """Temperature, prior adjustment and thresholds from `oof`, as LocalModel.train fits them (on the rows in
    `seen`), then the dev split's predictions and scores. `confidence` may re-score the chosen answers."""
    y, classes, n = fits.y, fits.classes, len(fits.classes)
    keep = np.ones(len(y), dtype=bool) if seen is None else seen
    temperature = local._fit_temperature(oof[keep], y[keep])
    held_out = softmax(oof / temperature, axis=1)
    log_prior = np.log(np.bincount(y, minlength=n) / len(y))
    tau = local._fit_tau(held_out[keep], y[keep], log_prior)
    offsets = -tau * log_prior
    thresholds = np.maximum(local._fit_thresholds(held_out[keep], y[keep], classes, offsets), min(0.5, 1.5 / n))
    small = np.bincount(y, minlength=n) < local.MIN_EXAMPLES
    if not small.all():
        thresholds[small] = 1.0
    probabilities = softmax(dev / temperature, axis=1)
    chosen, conf = local._decide(probabilities, offsets)
    if confidence is not None:
        held_chosen, held_conf = local._decide(held_out, offsets)
        conf = confidence(held_chosen, held_conf, chosen, conf)
    predictions = [None if classes[c] == OUT_OF_SCOPE or p < thresholds[c] or thresholds[c] >= 1.0 or is_novel
                   else classes[c] for c, p, is_novel in zip(chosen, conf, novel, strict=True)]
    return score(fits.dev_labels, predictions, list(conf)), predictions, [float(c) for c in conf]


def centroid_novelty(fits: Fits) -> tuple[np.ndarray, np.ndarray]:
    """Similarity to the nearest category centroid: training tickets left out of their own, and dev tickets."""
    vectors, dev_vectors = fits.features["embedding"]
    centroids, _ = local._centroids(vectors, fits.y, fits.classes)
    in_scope = [c for c, name in enumerate(fits.classes) if name != OUT_OF_SCOPE]
    rows = np.flatnonzero(fits.in_scope)
    sums = np.vstack([vectors[fits.y == c].sum(axis=0) for c in in_scope])
    norms = np.linalg.norm(sums, axis=1)
    own = np.searchsorted(in_scope, fits.y[rows])
    dots = vectors[rows] @ sums.T
    similarity = dots / norms
    own_dot = dots[np.arange(len(rows)), own]
    left_out = np.sqrt(np.maximum(norms[own] ** 2 - 2 * own_dot + 1, 1e-12))
    similarity[np.arange(len(rows)), own] = (own_dot - 1) / left_out
    return similarity.max(axis=1), (dev_vectors @ centroids.T).max(axis=1)


def neighbour_novelty(fits: Fits, ks: tuple[int, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Similarity to the k-th nearest in-scope training ticket (itself left out), for each k."""
    vectors = fits.features["embedding"][0][fits.in_scope]
    deepest = max(ks)

    def nearest(queries: np.ndarray, leave_out: bool) -> np.ndarray:
        out = []
        for start in range(0, len(queries), 2000):
            similarity = queries[start:start + 2000] @ vectors.T
            if leave_out:
                similarity[np.arange(len(similarity)), np.arange(start, start + len(similarity))] = -1.0
            top = -np.partition(-similarity, deepest - 1, axis=1)[:, :deepest]
            out.append(-np.sort(-top, axis=1))
        return np.vstack(out)

    train, dev = nearest(vectors, True), nearest(fits.features["embedding"][1], False)
    return {k: (train[:, k - 1], dev[:, k - 1]) for k in ks}


def mahalanobis_novelty(fits: Fits) -> tuple[np.ndarray, np.ndarray]:
    """Minus the Mahalanobis distance to the nearest category mean, one covariance shared by all (computed as a
    Euclidean distance after whitening)."""
    vectors = fits.features["embedding"][0][fits.in_scope]
    labels = fits.y[fits.in_scope]
    present = np.unique(labels)
    means = np.vstack([vectors[labels == c].mean(axis=0) for c in present])
    centred = vectors - means[np.searchsorted(present, labels)]
    covariance = centred.T @ centred / len(centred) + 1e-3 * np.eye(vectors.shape[1])
    whiten = np.linalg.cholesky(np.linalg.inv(covariance))  # precision = whiten @ whiten.T
    white_means = means @ whiten

    def score_of(points: np.ndarray) -> np.ndarray:
        white = points @ whiten
        distances = (white ** 2).sum(axis=1)[:, None] - 2 * white @ white_means.T + (white_means ** 2).sum(axis=1)
        return -distances.min(axis=1)

    return score_of(vectors), score_of(fits.features["embedding"][1])


def energy_novelty(fits: Fits) -> tuple[np.ndarray, np.ndarray]:
    """Log-sum-exp of an embedding head's scores (fitted on all of train, so in-sample for training tickets)."""
    vectors, dev_vectors = fits.features["embedding"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = LogisticRegression(C=local.EMBEDDING_C, max_iter=300).fit(vectors, fits.y)
    return (logsumexp(head.decision_function(vectors), axis=1)[fits.in_scope],
            logsumexp(head.decision_function(dev_vectors), axis=1))


def knn_expert(fits: Fits, name: str, k: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of a similarity-weighted vote of the k nearest training tickets, smoothed towards the
    prior: out of fold on train, and on dev."""
    n = len(fits.classes)
    matrix, dev_matrix = fits.features[name]
    if sparse.issparse(matrix):
        matrix, dev_matrix = normalize(matrix), normalize(dev_matrix)

    def vote(reference: Any, labels: np.ndarray, queries: Any) -> np.ndarray:
        prior = (np.bincount(labels, minlength=n) + 1) / (len(labels) + n)
        out = []
        for start in range(0, queries.shape[0], 1000):
            similarity = queries[start:start + 1000] @ reference.T
            similarity = similarity.toarray() if sparse.issparse(similarity) else similarity
            nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
            weights = np.exp((np.take_along_axis(similarity, nearest, 1) - similarity.max(axis=1, keepdims=True))
                             / temperature)
            votes = np.zeros((len(similarity), n))
            np.add.at(votes, (np.repeat(np.arange(len(similarity)), k), labels[nearest].ravel()), weights.ravel())
            votes /= weights.sum(axis=1, keepdims=True)
            out.append(np.log((votes * k + 0.5 * prior) / (k + 0.5)))
        return np.vstack(out)

    oof = np.zeros((len(fits.y), n))
    for rows, held in fits.splits:
        oof[held] = vote(matrix[rows], fits.y[rows], matrix[held])
    return oof, vote(matrix, fits.y, dev_matrix)


def platt_for(fits: Fits, shrink: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Re-score each answer by a logistic fit of right/wrong on its category's held-out answers, shrunk towards
    the all-category fit by `shrink` pseudo-answers."""
    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    def fit(x: np.ndarray, right: np.ndarray) -> tuple[float, float]:
        model = LogisticRegression(C=1.0).fit(logit(x)[:, None], right.astype(int))
        return float(model.coef_[0, 0]), float(model.intercept_[0])

    def rescore(held_chosen: np.ndarray, held_conf: np.ndarray, chosen: np.ndarray, conf: np.ndarray) -> np.ndarray:
        right = held_chosen == fits.y
        slope, intercept = fit(held_conf, right)
        params = {}
        for c in np.unique(held_chosen):
            mine = held_chosen == c
            weight = mine.sum() / (mine.sum() + shrink)
            if mine.sum() >= 5 and len(set(right[mine])) > 1:
                a, b = fit(held_conf[mine], right[mine])
                params[c] = (weight * a + (1 - weight) * slope, weight * b + (1 - weight) * intercept)
            else:  # all right or all wrong: move the intercept by the shrunk difference in log-odds
                accuracy = (right[mine].sum() + 0.5) / (mine.sum() + 1)
                expected = 1 / (1 + np.exp(-(slope * logit(held_conf[mine]).mean() + intercept)))
                params[c] = (slope, intercept + weight * (logit(np.array([accuracy]))[0]
                                                          - logit(np.array([expected]))[0]))
        a = np.array([params.get(c, (slope, intercept))[0] for c in chosen])
        b = np.array([params.get(c, (slope, intercept))[1] for c in chosen])
        return 1 / (1 + np.exp(-(a * logit(conf) + b)))

    return rescore


def row(name: str, result: dict[str, float]) -> str:
    keys = ("accuracy", "macro_f1", "coverage_at_95", "in_scope_accuracy", "out_of_scope_abstained")
    return f"| {name} | " + " | ".join(f"{result[k]:.3f}" if k in result else "-" for k in keys) + " |"


def report(dataset: str, fits: Fits) -> None:
    print(f"\n### {dataset}\n")
    print("| variant | accuracy | macro-F1 | coverage@95 | in-scope acc | OOS abstained |")
    print("|---|---|---|---|---|---|")
    train_sim, dev_sim = centroid_novelty(fits)
    novel = dev_sim < np.quantile(train_sim, local.NOVELTY_QUANTILE)
    oof, dev = mixed(fits.oof), mixed(fits.dev)
    shipped, predictions, confidences = run(fits, oof, dev, novel, seen=fits.seen)
    print(row("shipped recipe", shipped))
    print(row("every held-out ticket in the fits (before the fold fix)", run(fits, oof, dev, novel)[0]))
    if OUT_OF_SCOPE in fits.classes:
        labels, answers = with_oos_share(fits.dev_labels, list(zip(predictions, confidences, strict=True)),
                                         OOS_SHARE)
        print(row(f"shipped recipe, {OOS_SHARE:.0%} out of scope",
                  score(labels, [p for p, _ in answers], [c for _, c in answers])))
    experts = {("embedding", 20, 0.1): knn_expert(fits, "embedding", 20, 0.1),
               ("tfidf", 10, 0.05): knn_expert(fits, "tfidf", 10, 0.05)}
    for (name, k, temperature), (expert_oof, expert_dev) in experts.items():
        for weight in (0.2, 0.33):
            print(row(f"+ kNN expert on {name} (k {k}, temperature {temperature}, weight {weight})",
                      run(fits, (1 - weight) * oof + weight * expert_oof, (1 - weight) * dev + weight * expert_dev,
                          novel, seen=fits.seen)[0]))
    (e_oof, e_dev), (t_oof, t_dev) = experts.values()
    print(row("+ both kNN experts (weights 0.2 each)",
              run(fits, 0.6 * oof + 0.2 * e_oof + 0.2 * t_oof, 0.6 * dev + 0.2 * e_dev + 0.2 * t_dev, novel,
                  seen=fits.seen)[0]))
    for weight in (0.5, 0.75):
        bagged = {name: (1 - weight) * fits.dev[name] + weight * log_softmax(np.mean(fits.fold_dev[name], axis=0),
                                                                               axis=1) for name in fits.dev}
        print(row(f"fold models averaged in (weight {weight})", run(fits, oof, mixed(bagged), novel,
                                                                   seen=fits.seen)[0]))
    for shrink in (10, 30, 100):
        print(row(f"per-class calibration (shrunk by {shrink})",
                  run(fits, oof, dev, novel, seen=fits.seen, confidence=platt_for(fits, shrink))[0]))
    if OUT_OF_SCOPE not in fits.classes:
        return
    print(f"\n{dataset}: novelty scores, out of scope abstained at coverage@95, by training quantile\n")
    print("| novelty score | " + " | ".join(f"{q:.1%}" for q in QUANTILES) + " |")
    print("|---|" + "---|" * len(QUANTILES))

    def zscores(train: np.ndarray, dev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (train - train.mean()) / train.std(), (dev - train.mean()) / train.std()

    scores = {"nearest category centroid (shipped)": (train_sim, dev_sim),
              "Mahalanobis, nearest category mean": mahalanobis_novelty(fits)}
    neighbours = neighbour_novelty(fits, (1, 5, 10))
    for k, pair in neighbours.items():
        scores[f"nearest training ticket no. {k}"] = pair
    (ct, cd), (kt, kd) = zscores(train_sim, dev_sim), zscores(*neighbours[1])
    scores["centroid + nearest ticket"] = (ct + kt, cd + kd)
    scores["energy"] = energy_novelty(fits)
    for name, (train, dev_score) in scores.items():
        cells = []
        for q in QUANTILES:
            result = run(fits, oof, dev, dev_score < np.quantile(train, q), seen=fits.seen)[0]
            cells.append(f"{result['out_of_scope_abstained']:.2f} at {result['coverage_at_95']:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--only", default="itgroups,banking77,clinc150", help="comma-separated dataset names")
    args = parser.parse_args()
    if not embeddings.available():
        sys.exit("needs the embeddings extra: pip install -e '.[embeddings]'")
    for dataset in args.only.split(","):
        report(dataset, Fits(args.data / dataset))


if __name__ == "__main__":
    main()
