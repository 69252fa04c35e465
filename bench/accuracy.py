"""The local tier against the reference baseline, on every dataset in ../shared/data, in one run.

    python bench/accuracy.py [--data ../shared/data] [--only banking77,clinc150] [--json results.json]

For each dataset: train on train.csv, score on dev.csv (a dataset with one all.csv is split 80/20 by a
hash of the text, stratified enough at this size). Three models, all trained and timed in this process:
- reference: TF-IDF word 1-2 + char_wb 2-5, CalibratedClassifierCV(LinearSVC(C=0.5), cv=2);
- ours, default install: TF-IDF + logistic regression, calibrated, with per-class abstention;
- ours, [embeddings] extra: the same plus the MiniLM head (skipped if the extra is missing).
Prints a markdown table: accuracy, macro-F1, coverage at 95% precision, out-of-scope abstention,
single-ticket p50 latency, training time.

Two extra views score the same predictions again (no new training), with connector/classify/evaluation.py
unchanged:
- "<dataset> (20% OOS)": a dataset with out_of_scope rows (clinc150: 3% of dev) with each of those rows
  repeated so that they make 20% of the rows, as real inboxes have more tickets no category fits.
  Repetition is weighting by whole numbers (7 or 8 copies each for clinc150's 100), so the view is
  deterministic. Note that at a 20% share coverage at 95% precision can't exceed 0.80 / 0.95 = 0.84:
  an abstention is not coverage, and every routed out-of-scope row is a mistake.
- "<dataset> (groups)": categories that the default Zendesk mapping (mappings/zendesk.yaml) sends to one
  group counted as one: a ticket routed to the right group is routed right. No dataset here uses the
  default taxonomy's labels, so GROUP_VIEWS says which of a dataset's labels stand for which taxonomy
  category (bitext's invoice and payment are billing; refund and cancellation_fee are
  refunds_cancellation; billing and refunds_cancellation share the billing group). Labels without a
  counterpart stay themselves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.classify import embeddings  # noqa: E402
from connector.classify.evaluation import score  # noqa: E402
from connector.classify.local import LocalModel  # noqa: E402
from connector.datasets import Dataset, load_dataset  # noqa: E402
from connector.models import OUT_OF_SCOPE  # noqa: E402

LATENCY_SAMPLE = 300
OOS_SHARE = 0.20
MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "zendesk.yaml"
# dataset -> {its label: the default taxonomy's category}, for the group-level view.
GROUP_VIEWS = {"bitext": {"invoice": "billing", "payment": "billing", "refund": "refunds_cancellation",
                          "cancellation_fee": "refunds_cancellation"}}


class Reference:
    """The baseline named in DESIGN.md."""

    def __init__(self, texts: list[str], labels: list[str]):
        from scipy import sparse
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        self._sparse = sparse
        self._vectorizers = [
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ]
        # Its 2-fold calibration needs two examples of each category: one with a single example (itgroups
        # has eight) is left out of its training, as a user of this baseline would have to.
        counts = Counter(labels)
        keep = [i for i, y in enumerate(labels) if counts[y] >= 2]
        features = sparse.hstack([v.fit_transform([texts[i] for i in keep]) for v in self._vectorizers]).tocsr()
        self._model = CalibratedClassifierCV(LinearSVC(C=0.5), cv=2).fit(features, [labels[i] for i in keep])

    def predict(self, text: str) -> tuple[str | None, float]:
        features = self._sparse.hstack([v.transform([text]) for v in self._vectorizers]).tocsr()
        row = self._model.predict_proba(features)[0]
        best = int(row.argmax())
        return str(self._model.classes_[best]), float(row[best])


def splits(folder: Path) -> tuple[Dataset, Dataset]:
    if (folder / "train.csv").exists():
        return load_dataset(folder / "train.csv"), load_dataset(folder / "dev.csv")
    whole = load_dataset(next(folder.glob("*.csv")))
    dev = [int(hashlib.sha256(t.encode()).hexdigest(), 16) % 5 == 0 for t in whole.texts]
    pick = lambda keep: Dataset([t for t, d in zip(whole.texts, dev, strict=True) if d == keep],  # noqa: E731
                                [y for y, d in zip(whole.labels, dev, strict=True) if d == keep])
    return pick(False), pick(True)


def measure(name: str, train: Callable[[], object], predict: Callable[[object, str], tuple[str | None, float]],
            dev: Dataset) -> tuple[dict[str, float | str], list[tuple[str | None, float]]]:
    started = time.perf_counter()
    model = train()
    train_seconds = time.perf_counter() - started
    predictions = [predict(model, text) for text in dev.texts]
    timings = []
    for text in dev.texts[:LATENCY_SAMPLE]:
        started = time.perf_counter()
        predict(model, text)
        timings.append((time.perf_counter() - started) * 1000)
    result = score(dev.labels, [p[0] for p in predictions], [p[1] for p in predictions])
    return {"model": name, **result, "p50_ms": statistics.median(timings), "train_s": train_seconds}, predictions


def with_oos_share(labels: list[str], predictions: list[tuple[str | None, float]],
                   share: float = OOS_SHARE) -> tuple[list[str], list[tuple[str | None, float]]]:
    """The rows, with each out_of_scope row repeated so that they make `share` of all (whole copies,
    spread as evenly as whole numbers allow: deterministic)."""
    oos = [i for i, y in enumerate(labels) if y == OUT_OF_SCOPE]
    target = round((len(labels) - len(oos)) * share / (1 - share))
    labels, predictions = list(labels), list(predictions)
    for k, i in enumerate(oos):
        extra = target // len(oos) + (k < target % len(oos)) - 1
        labels += [labels[i]] * extra
        predictions += [predictions[i]] * extra
    return labels, predictions


def group_of(dataset: str) -> dict[str, str]:
    """{label: group} for the labels of `dataset` that the default mapping puts in a shared group."""
    groups = {name: str(route["group_id"]) for name, route in
              yaml.safe_load(MAPPING.read_text(encoding="utf-8"))["categories"].items()}
    return {label: f"group {groups[category]}" for label, category in GROUP_VIEWS.get(dataset, {}).items()}


def view(base: dict[str, float | str], labels: list[str], predictions: list[tuple[str | None, float]],
         name: str) -> dict[str, float | str]:
    return {**base, "dataset": name, **score(labels, [p[0] for p in predictions], [p[1] for p in predictions])}


def ours(use_embeddings: bool, data: Dataset) -> Callable[[], LocalModel]:
    return lambda: LocalModel.train(data.texts, data.labels, use_embeddings=use_embeddings)


def predict_ours(model: object, text: str) -> tuple[str | None, float]:
    p = model.predict(text)  # type: ignore[attr-defined]
    return p.label, p.confidence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--only", help="comma-separated dataset names")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    folders = sorted(p for p in args.data.iterdir() if p.is_dir() and any(p.glob("*.csv")))
    if args.only:
        folders = [f for f in folders if f.name in args.only.split(",")]
    if not embeddings.available():
        print("note: the [embeddings] extra is not installed; its rows are skipped", file=sys.stderr)
    rows = []
    for folder in folders:
        train, dev = splits(folder)
        print(f"{folder.name}: {len(train)} train, {len(dev)} dev, {len(set(train.labels))} labels", file=sys.stderr)
        candidates = [("reference", lambda t=train: Reference(t.texts, t.labels), lambda m, x: m.predict(x)),
                      ("ours (default)", ours(False, train), predict_ours)]
        if embeddings.available():
            candidates.append(("ours (+embeddings)", ours(True, train), predict_ours))
        extra: list[dict[str, float | str]] = []
        for name, fit, predict in candidates:
            result, predictions = measure(name, fit, predict, dev)
            row = {"dataset": folder.name, **result}
            rows.append(row)
            print(f"  {name}: done in {row['train_s']:.0f} s: {json.dumps(row, default=float)}", file=sys.stderr)
            if OUT_OF_SCOPE in dev.labels:
                extra.append(view(row, *with_oos_share(dev.labels, predictions), f"{folder.name} (20% OOS)"))
            if groups := group_of(folder.name):
                extra.append(view(row, [groups.get(y, y) for y in dev.labels],
                                  [(p if p is None else groups.get(p, p), c) for p, c in predictions],
                                  f"{folder.name} (groups)"))
        rows.extend(extra)
    print("| dataset | model | accuracy | macro-F1 | coverage@95 | OOS abstained | in-scope acc | p50 ms | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        oos = f"{r['out_of_scope_abstained']:.3f}" if "out_of_scope_abstained" in r else "-"
        in_scope = f"{r['in_scope_accuracy']:.3f}" if "in_scope_accuracy" in r else "-"
        print(f"| {r['dataset']} | {r['model']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
              f"{r['coverage_at_95']:.3f} | {oos} | {in_scope} | {r['p50_ms']:.1f} | {r['train_s']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
