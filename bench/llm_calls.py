#!/usr/bin/env python3
"""How many Claude calls the cascade makes, and what they cost, on the banking77 dev split.

The taxonomy is banking77's 77 intents (each with three training examples for the prompt). Claude
is the loopback fake (platforms/fakes/claude.py) behind the real anthropic SDK, with a simulated
fast model that is unsure (confidence 0.6) about one ticket in five, so that escalations to the
strong model happen, and a strong model that is sure. Both answer the true label: this bench counts
calls and tokens, not accuracy. Two runs, in the same process:
  untrained   no local model: every ticket the rules can't place goes to Claude (day one)
  trained     the local model trained on banking77's train split (about 13 s), at the default
              confidence threshold of 0.75
Token counts use the fake's estimate (4 characters a token) and its prompt caching, which only
starts once the cached prefix reaches the model's minimum (4,096 tokens for Haiku 4.5).

    python bench/llm_calls.py
    python bench/llm_calls.py --data ../shared/data/banking77 --limit 500
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.classify.cascade import Cascade  # noqa: E402
from connector.classify.llm import LLMTier  # noqa: E402
from connector.classify.local import LocalModel  # noqa: E402
from connector.classify.rules import RulesTier  # noqa: E402
from connector.datasets import Dataset, load_dataset  # noqa: E402
from connector.mappings import Category, Taxonomy  # noqa: E402
from connector.settings import Settings  # noqa: E402
from platforms.fakes.claude import FakeClaude, ticket_text  # noqa: E402

UNSURE_SHARE = 20  # percent of tickets the simulated fast model is unsure about


def category_name(label: str) -> str:
    """banking77 has labels such as `Refund_not_showing_up` and `reverted_card_payment?`."""
    return re.sub(r"[^a-z0-9_]", "", label.lower())


def taxonomy_from(train: Dataset, examples_per_label: int = 3) -> Taxonomy:
    examples: dict[str, list[str]] = {}
    for text, label in zip(train.texts, map(category_name, train.labels), strict=True):
        examples.setdefault(label, [])
        if len(examples[label]) < examples_per_label:
            examples[label].append(text)
    categories = {label: Category(description=f"The customer asks about {label.replace('_', ' ')}.",
                                  examples=texts) for label, texts in sorted(examples.items())}
    return Taxonomy(categories=categories)


def responder(labels: dict[str, str]):  # type: ignore[no-untyped-def]
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        text = re.sub(r"^<ticket>\n|\n</ticket>$", "", ticket_text(body))
        strong = "sonnet" in body["model"]
        unsure = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 100 < UNSURE_SHARE
        confidence = 0.95 if strong else (0.6 if unsure else 0.92)
        return {"category": labels.get(text, "none"), "category_confidence": confidence, "priority": "normal",
                "priority_confidence": 0.9, "sentiment": "neutral", "sentiment_confidence": 0.9, "language": "en",
                "language_confidence": 0.99, "summary": "A banking question.", "reason": "Matches the intent."}
    return answer


def run(name: str, cascade: Cascade, dev: Dataset) -> dict[str, float]:
    calls: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    tiers: Counter[str] = Counter()
    cost = 0.0
    started = time.perf_counter()
    for text in dev.texts:
        result = cascade.classify(text)
        tiers[result.tier] += 1
        for call in result.llm_calls:
            calls[call.model] += 1
            tokens.update(input=call.input_tokens, output=call.output_tokens, cache_read=call.cache_read_tokens,
                          cache_write=call.cache_write_tokens)
            cost += call.cost_usd or 0.0
    n = len(dev)
    per_100 = sum(calls.values()) * 100 / n
    figures = {"llm_calls_per_100": per_100, **{f"tokens_{k}_per_ticket": v / n for k, v in tokens.items()},
               "cost_usd_per_1000_tickets": cost * 1000 / n}
    print(f"{name:>10}: {per_100:6.1f} Claude calls per 100 tickets "
          f"({', '.join(f'{m} {c}' for m, c in sorted(calls.items()))}); decided by "
          f"{', '.join(f'{t} {c * 100 / n:.1f}%' for t, c in sorted(tiers.items()))}; "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    print(f"{'':>10}  tokens per ticket: {tokens['input'] / n:.0f} input, {tokens['cache_read'] / n:.0f} cache read, "
          f"{tokens['cache_write'] / n:.0f} cache write, {tokens['output'] / n:.0f} output; "
          f"estimated ${cost * 1000 / n:.2f} per 1,000 tickets", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77",
                        help="folder with train.csv and dev.csv")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N dev tickets")
    args = parser.parse_args()
    train, dev = load_dataset(args.data / "train.csv"), load_dataset(args.data / "dev.csv")
    if args.limit:
        dev = Dataset(dev.texts[:args.limit], dev.labels[:args.limit])
    from connector.classify.redact import redact

    labels = {redact(text): category_name(label) for text, label in zip(dev.texts, dev.labels, strict=True)}
    fake = FakeClaude(responder=responder(labels))
    os.environ["ANTHROPIC_BASE_URL"] = f"http://{fake.start()}"
    settings = Settings(_env_file=None, anthropic_api_key="bench-not-a-real-key")
    taxonomy = taxonomy_from(train)
    llm = LLMTier.from_settings(settings, taxonomy)
    assert llm is not None
    rules = RulesTier(taxonomy)
    threshold = settings.deskroute_confidence_threshold
    print(f"banking77 dev: {len(dev)} tickets, {len(taxonomy.categories)} categories, prompt {llm.prompt_version}, "
          f"fast model unsure about {UNSURE_SHARE}% of tickets", flush=True)
    untrained = run("untrained", Cascade(rules=rules, local=None, threshold=threshold, llm=llm), dev)
    started = time.perf_counter()
    model = LocalModel.train(train.texts, [category_name(label) for label in train.labels])
    print(f"(local model trained on {len(train)} tickets in {time.perf_counter() - started:.0f} s)", flush=True)
    trained = run("trained", Cascade(rules=rules, local=model, threshold=threshold, llm=llm), dev)
    fake.stop()
    print(f"Claude calls per 100 tickets: {untrained['llm_calls_per_100']:.1f} untrained -> "
          f"{trained['llm_calls_per_100']:.1f} trained (goal: at most 15)")


if __name__ == "__main__":
    main()
