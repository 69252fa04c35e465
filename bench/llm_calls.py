#!/usr/bin/env python3
"""How many Claude calls the cascade makes, and what they cost, on the banking77 dev split.

The taxonomy is banking77's 77 intents (each with three training examples for the prompt). Claude
is the loopback fake (platforms/fakes/claude.py) behind the real anthropic SDK, with a simulated
fast model that is unsure (confidence 0.6) about one ticket in five, so that escalations to the
strong model happen, and a strong model that is sure. Both answer the true label: this bench counts
calls and tokens; the accuracy it prints counts Claude as always right. Three runs, in one process:
  untrained   no local model: every ticket the rules can't place goes to Claude (day one)
  trained     the local model trained on banking77's train split (about 13 s), at the default
              confidence threshold of 0.75
  + teams     the same, with the intents staffed by eight teams (TEAMS): a ticket goes to a team when
              that team's intents together clear the threshold (group-level decisions)
Each run also prints how many tickets reached the right team, and the right intent.
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
from connector.models import candidates  # noqa: E402
from connector.settings import Settings  # noqa: E402
from platforms.fakes.claude import FakeClaude, ticket_text  # noqa: E402

UNSURE_SHARE = 20  # percent of tickets the simulated fast model is unsure about

# How a bank's support would staff banking77's intents: eight teams, each taking related intents (the
# intents' own wording decided this, not the figures). Group-level decisions route to a team when its
# intents together are sure enough, which is where most of the local model's doubt lies.
TEAMS = {
    "cards": "activate_my_card card_about_to_expire card_arrival card_delivery_estimate card_linking get_physical_card"
             " getting_spare_card order_physical_card getting_virtual_card get_disposable_virtual_card"
             " disposable_card_limits virtual_card_not_working visa_or_mastercard supported_cards_and_currencies"
             " apple_pay_or_google_pay",
    "card_problems": "card_not_working contactless_not_working card_swallowed compromised_card lost_or_stolen_card"
                     " lost_or_stolen_phone change_pin pin_blocked passcode_forgotten declined_card_payment"
                     " card_acceptance",
    "disputes": "card_payment_not_recognised cash_withdrawal_not_recognised direct_debit_payment_not_recognised"
                " transaction_charged_twice extra_charge_on_statement request_refund refund_not_showing_up"
                " reverted_card_payment pending_card_payment wrong_amount_of_cash_received",
    "fees_and_exchange": "card_payment_fee_charged card_payment_wrong_exchange_rate cash_withdrawal_charge"
                         " exchange_charge exchange_rate exchange_via_app fiat_currency_support transfer_fee_charged"
                         " top_up_by_bank_transfer_charge top_up_by_card_charge"
                         " wrong_exchange_rate_for_cash_withdrawal",
    "transfers": "balance_not_updated_after_bank_transfer beneficiary_not_allowed cancel_transfer declined_transfer"
                 " failed_transfer pending_transfer receiving_money transfer_into_account"
                 " transfer_not_received_by_recipient transfer_timing",
    "top_ups": "automatic_top_up balance_not_updated_after_cheque_or_cash_deposit pending_top_up"
               " top_up_by_cash_or_cheque top_up_failed top_up_limits top_up_reverted topping_up_by_card verify_top_up",
    "cash": "atm_support declined_cash_withdrawal pending_cash_withdrawal",
    "identity_and_account": "age_limit country_support edit_personal_details terminate_account"
                            " unable_to_verify_identity verify_my_identity verify_source_of_funds why_verify_identity",
}
GROUPS = {intent: team for team, intents in TEAMS.items() for intent in intents.split()}


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


def run(name: str, cascade: Cascade, dev: Dataset, groups: dict[str, str] | None = None) -> dict[str, float]:
    calls: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    tiers: Counter[str] = Counter()
    cost = 0.0
    right_team = right_label = 0
    started = time.perf_counter()
    for text, label in zip(dev.texts, map(category_name, dev.labels), strict=True):
        result = cascade.classify(text, groups)
        tiers[result.tier] += 1
        chosen = candidates(result.category) or ([result.category] if result.category else [])
        right_label += chosen == [label]
        right_team += bool(chosen) and GROUPS[chosen[0]] == GROUPS[label]
        for call in result.llm_calls:
            calls[call.model] += 1
            tokens.update(input=call.input_tokens, output=call.output_tokens, cache_read=call.cache_read_tokens,
                          cache_write=call.cache_write_tokens)
            cost += call.cost_usd or 0.0
    n = len(dev)
    per_100 = sum(calls.values()) * 100 / n
    figures = {"llm_calls_per_100": per_100, **{f"tokens_{k}_per_ticket": v / n for k, v in tokens.items()},
               "cost_usd_per_1000_tickets": cost * 1000 / n, "team_accuracy": right_team / n,
               "label_accuracy": right_label / n}
    print(f"{name:>10}: {per_100:6.1f} Claude calls per 100 tickets "
          f"({', '.join(f'{m} {c}' for m, c in sorted(calls.items()))}); decided by "
          f"{', '.join(f'{t} {c * 100 / n:.1f}%' for t, c in sorted(tiers.items()))}; "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    print(f"{'':>10}  sent to the right team: {right_team / n:.3f}; with the exact intent: {right_label / n:.3f}"
          " (a group-level decision names no one intent)", flush=True)
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
    cascade = Cascade(rules=rules, local=model, threshold=threshold, llm=llm)
    trained = run("trained", cascade, dev)
    teams = run("+ teams", cascade, dev, GROUPS)
    fake.stop()
    print(f"Claude calls per 100 tickets: {untrained['llm_calls_per_100']:.1f} untrained -> "
          f"{trained['llm_calls_per_100']:.1f} trained -> {teams['llm_calls_per_100']:.1f} trained with group-level"
          f" decisions over {len(TEAMS)} teams (goal: at most 8, with no loss of accuracy: right team"
          f" {trained['team_accuracy']:.3f} -> {teams['team_accuracy']:.3f})")


if __name__ == "__main__":
    main()
