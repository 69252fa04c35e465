"""Training with one held-out third (local.HOLDOUT_FROM) against three folds, in one session: the time a
training takes and the dev figures each model scores.

Above HOLDOUT_FROM examples a training fits its heads once on two thirds of the data (for the temperature,
tau and the thresholds) and once on everything, instead of three times on two thirds and once on everything.
This script forces each way on the same data, whatever its size:

    python bench/holdout.py --data ../shared/data/clinc150/train.csv --dev ../shared/data/clinc150/dev.csv
    python bench/holdout.py --data train20k.csv      # time only (docs/local-model.md: clinc150 + 4,900 banking77 rows)

Each text is embedded once, before both timings (embeddings.reusing), so the times compare what the held-out
third changes: the fits. The embedding time is printed apart; a whole training takes it on top of either.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.classify import embeddings, local  # noqa: E402
from connector.classify.clean import clean  # noqa: E402
from connector.classify.evaluation import score  # noqa: E402
from connector.datasets import load_dataset  # noqa: E402


def train(texts: list[str], labels: list[str], holdout_from: float) -> tuple[local.LocalModel, float]:
    local.HOLDOUT_FROM = holdout_from  # type: ignore[assignment]
    started = time.perf_counter()
    model = local.LocalModel.train(texts, labels)
    return model, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dev", type=Path, help="a labelled file to score both models on")
    args = parser.parse_args()
    data = load_dataset(args.data)
    dev = load_dataset(args.dev) if args.dev else None
    if embeddings.available():
        embeddings.embedder()  # loaded once, outside both timings
    rows = []
    with embeddings.reusing():
        if embeddings.available():
            started = time.perf_counter()
            embeddings.embedder().embed([clean(t) for t in data.texts])
            print(f"{'embedding':>20}: {time.perf_counter() - started:6.1f} s (once, for both)", flush=True)
        for name, holdout_from in (("three folds", float("inf")), ("one held-out third", 0)):
            model, seconds = train(data.texts, data.labels, holdout_from)
            figures = ""
            if dev is not None:
                answers = model.predict_many(dev.texts)
                s = score(dev.labels, [a.label for a in answers], [a.confidence for a in answers])
                figures = "  ".join(f"{k} {s[k]:.3f}" for k in ("accuracy", "macro_f1", "coverage_at_95",
                                                                "out_of_scope_abstained") if k in s)
            rows.append((name, seconds))
            print(f"{name:>20}: train {seconds:6.1f} s  {figures}", flush=True)
    print(f"{args.data} ({len(data.texts)} examples): one held-out third trains in "
          f"{rows[1][1] / rows[0][1]:.2f}x the time of three folds")


if __name__ == "__main__":
    main()
