"""The classification cascade: guardrails, then rules, then the local model, then Claude, then triage.

The first tier whose confidence clears the threshold decides, so a confident local answer never
costs an LLM call. A guardrail hit sends the ticket to humans whatever the tiers say; the cheap
local tiers still run so the note can carry a best guess, but Claude is not asked.

Group-level decisions: what matters to the customer is the destination, not the label. When the
categories that share one destination group (given as `groups`, category -> destination) together
clear the threshold, that tier decides for the group even if no one category does: "billing 0.51 +
refunds_cancellation 0.47" goes to the Billing group, labelled `ambiguous:billing|refunds_cancellation`
for a team lead to settle. Calibrated probabilities add up, so the group's confidence means what a
category's does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connector.classify.clean import is_auto_reply
from connector.classify.rules import RULE_CONFIDENCE, RulesTier
from connector.models import OUT_OF_SCOPE, Alternative, Classification, TierResult, ambiguous, candidates

if TYPE_CHECKING:
    from connector.classify.llm import LLMOutcome, LLMTier
    from connector.classify.local import LocalModel


class Cascade:
    """Runs the tiers in order and reports which one decided."""

    def __init__(self, *, rules: RulesTier, local: LocalModel | None, threshold: float,
                 model_version: str | None = None, llm: LLMTier | None = None):
        self.rules = rules
        self.local = local
        self.threshold = threshold
        self.model_version = model_version
        self.llm = llm

    def _local(self, text: str, groups: Mapping[str, str]) -> TierResult | None:
        if self.local is None:
            return None
        prediction = self.local.predict(text)
        if prediction.label is None and prediction.top_label == OUT_OF_SCOPE:
            reason = f"local model: out of scope ({prediction.confidence:.2f})"
        elif prediction.label is None and prediction.novel:
            reason = f"local model: unlike any example it learned from (best guess {prediction.top_label})"
        elif prediction.label is None:
            reason = (f"local model: unsure; best guess {prediction.top_label} at {prediction.confidence:.2f},"
                      f" below that category's {prediction.threshold:.2f}")
        else:
            runner_up = next(((label, p) for label, p in prediction.ranked[1:]), None)
            reason = f"local model: {prediction.confidence:.2f}"
            if runner_up:
                reason += f" (next: {runner_up[0]} {runner_up[1]:.2f})"
        result = TierResult(tier="local", category=prediction.label, confidence=prediction.confidence, reason=reason,
                            ranked=[Alternative(category=label, confidence=round(p, 4))
                                    for label, p in prediction.ranked])
        if not self._decides(result) and not prediction.novel and prediction.top_label != OUT_OF_SCOPE:
            # As sure of the group as it must be of a category: the threshold, and the top category's own.
            return self._for_group(result, groups, floor=max(self.threshold, prediction.threshold)) or result
        return result

    @staticmethod
    def _rules_group(result: TierResult, groups: Mapping[str, str]) -> TierResult | None:
        """Keywords of several categories that all share one destination: a decision for that group (used
        only if the local model can't say which category it is)."""
        matched = [a.category for a in result.ranked]
        if result.category is None and len(matched) > 1 and all(c in groups for c in matched) \
                and len({groups[c] for c in matched}) == 1:
            return result.model_copy(update={
                "category": ambiguous(matched), "confidence": RULE_CONFIDENCE,
                "reason": f"keywords of {', '.join(matched)}, which share one destination"})
        return None

    def _for_group(self, result: TierResult, groups: Mapping[str, str], *, floor: float) -> TierResult | None:
        """The tier's answer for a destination group that several of its ranked categories share, when together
        they reach `floor`; None otherwise."""
        by_group: dict[str, list[Alternative]] = defaultdict(list)
        for alternative in result.ranked:
            if alternative.category in groups:
                by_group[groups[alternative.category]].append(alternative)
        if not by_group:
            return None
        members = max(by_group.values(), key=lambda alts: sum(a.confidence for a in alts))
        total = min(sum(a.confidence for a in members), 1.0)
        if len(members) < 2 or total < floor:
            return None
        parts = " + ".join(f"{a.category} {a.confidence:.2f}" for a in members)
        return result.model_copy(update={
            "category": ambiguous([a.category for a in members]), "confidence": round(total, 4),
            "reason": f"{result.reason}; one destination for {parts} = {total:.2f}"})

    def _decides(self, result: TierResult) -> bool:
        return result.category is not None and result.confidence >= self.threshold

    def classify(self, text: str, groups: Mapping[str, str] | None = None) -> Classification:
        """Classify one ticket's text; `groups` (category -> destination) allows group-level decisions."""
        groups = groups or {}
        started = time.perf_counter()
        guardrail = self.rules.guardrail(text)
        if guardrail is None and is_auto_reply(text):  # nobody to route for; not worth a Claude call either
            return Classification(category=None, confidence=0.0, tier="triage", tiers=[],
                                  reason="automatic reply (out of office or similar): no request to route",
                                  model_version=self.model_version,
                                  latency_ms=round((time.perf_counter() - started) * 1000, 3))
        decided: TierResult | None = None
        rules = self.rules.classify(text)
        tiers: list[TierResult] = [rules]
        if self._decides(rules):
            decided = rules
        else:
            local = self._local(text, groups)
            if local is not None:
                tiers.append(local)
            # Else the model couldn't tell the categories apart: maybe their keywords agree on the group.
            decided = local if local is not None and self._decides(local) else self._rules_group(rules, groups)
        llm: LLMOutcome | None = None
        if decided is None and guardrail is None and self.llm is not None:
            llm = self.llm.classify(text, groups)
            said = llm.result
            if not self._decides(said) and said.category is not None:
                said = self._for_group(said, groups, floor=self.threshold) or said
            tiers.append(said)
            if self._decides(said):
                decided = said
        latency_ms = (time.perf_counter() - started) * 1000
        common: dict[str, Any] = {"tiers": tiers, "model_version": self.model_version,
                                  "latency_ms": round(latency_ms, 3)}
        chosen = decided.category if decided else None
        ranked = next((t.ranked for t in tiers if t.tier == "local"), [])
        taken = {chosen, OUT_OF_SCOPE, *candidates(chosen)}
        common["alternatives"] = [a for a in ranked if a.category not in taken][:2]
        if llm is not None:
            answer = llm.answer or {}
            common.update(prompt_version=llm.prompt_version, llm_calls=llm.calls, sentiment=answer.get("sentiment"),
                          language=answer.get("language"), summary=answer.get("summary"))
        if guardrail:
            return Classification(category=None, confidence=1.0, tier="rules", guardrail=guardrail.name,
                                  priority=guardrail.priority,
                                  reason=f"guardrail '{guardrail.name}' needs a person to review", **common)
        if decided:
            # Claude judges each ticket's urgency; the rules and the model leave it to the taxonomy.
            priority = (llm.answer or {}).get("priority") if llm is not None and decided.tier == "llm" else None
            return Classification(category=decided.category, confidence=decided.confidence, tier=decided.tier,
                                   reason=decided.reason, priority=priority, **common)
        best = max(tiers, key=lambda t: t.confidence, default=None)
        if best is None or best.category is None:
            reason = "no tier could place this ticket"
            if llm is not None and llm.answer is None:
                reason = llm.result.reason  # why Claude couldn't help
            elif best is not None and best.tier in ("local", "llm"):
                reason = best.reason
        else:
            reason = (f"not confident enough: best guess {best.category} at {best.confidence:.2f} ({best.tier}),"
                      f" below {self.threshold:.2f}")
        return Classification(category=None, confidence=best.confidence if best else 0.0, tier="triage",
                              reason=reason, **common)
