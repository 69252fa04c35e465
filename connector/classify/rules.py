"""Tier 1: the taxonomy's keywords, and the guardrails that force human review.

A keyword decides only when it is unambiguous: if keywords of two categories match, the rules tier
abstains and lists them (the cascade still decides for their group when they share one, else the model
decides). Guardrails are checked before anything else and win over every tier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from connector.mappings import Taxonomy
from connector.models import Alternative, Priority, TierResult

# A keyword hit is a strong but not infallible signal.
RULE_CONFIDENCE = 0.95


def _keyword_regex(keyword: str) -> str:
    # Word boundaries, flexible whitespace: "charged  twice" still matches "charged twice".
    words = [re.escape(w) for w in keyword.lower().split()]
    return r"(?<![\w])" + r"\s+".join(words) + r"(?![\w])"


def keyword_clashes(taxonomy: Taxonomy, category: str, keywords: list[str]) -> dict[str, list[str]]:
    """For each of `keywords` (meant for `category`), the other categories with an example ticket it matches:
    such a keyword would take those tickets from them (a keyword decides alone). Empty: none clashes."""
    clashes: dict[str, list[str]] = {}
    for keyword in keywords:
        rx = re.compile(_keyword_regex(keyword), re.IGNORECASE)
        others = [name for name, other in taxonomy.categories.items()
                  if name != category and any(rx.search(example) for example in other.examples)]
        if others:
            clashes[keyword] = others
    return clashes


@dataclass(frozen=True)
class GuardrailHit:
    """A guardrail that matched."""

    name: str
    priority: Priority
    phrase: str


class RulesTier:
    """Keyword rules and guardrails compiled from a taxonomy."""

    def __init__(self, taxonomy: Taxonomy):
        self._keywords = {
            name: [(kw, re.compile(_keyword_regex(kw), re.IGNORECASE)) for kw in category.keywords]
            for name, category in taxonomy.categories.items()
        }
        self._guardrails = [(g, [re.compile(p, re.IGNORECASE) for p in g.patterns]) for g in taxonomy.guardrails]

    def guardrail(self, text: str) -> GuardrailHit | None:
        """The first guardrail whose pattern occurs in the text."""
        for guardrail, patterns in self._guardrails:
            for pattern in patterns:
                if pattern.search(text):
                    return GuardrailHit(name=guardrail.name, priority=guardrail.priority, phrase=pattern.pattern)
        return None

    def classify(self, text: str) -> TierResult:
        """The one category whose keywords occur, or no category if none or several do."""
        hits = {name: kw for name, rules in self._keywords.items() for kw, rx in rules if rx.search(text)}
        if len(hits) == 1:
            (category, keyword), = hits.items()
            return TierResult(tier="rules", category=category, confidence=RULE_CONFIDENCE,
                              reason=f"keyword '{keyword}'")
        if hits:
            return TierResult(tier="rules", category=None, confidence=0.0,
                              reason=f"keywords of {len(hits)} categories matched: {', '.join(sorted(hits))}",
                              ranked=[Alternative(category=name, confidence=0.0) for name in sorted(hits)])
        return TierResult(tier="rules", category=None, confidence=0.0, reason="no keyword matched")
