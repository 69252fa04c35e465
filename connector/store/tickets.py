"""Tickets: the classify-once gate, the one decision each ticket gets, its group changes and its Claude calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.models import Classification, RoutingDecision, TicketState
from connector.store.db import Part
from connector.store.events import ClaimedEvent


@dataclass
class TicketRecord:
    """What we know about a ticket we've seen: who owns its routing and how far it got."""

    platform: str
    ticket_id: str
    event_id: int
    state: str
    first_seen_at: float
    classification: Classification | None
    decision: RoutingDecision | None
    applied_at: float | None = None


class Tickets(Part):
    """The `tickets`, `group_changes` and `llm_calls` tables."""

    def claim(self, *, platform: str, ticket_id: str, event_id: int, now: float) -> TicketRecord:
        """The first event to get here owns the ticket's routing; later ones see the existing record."""
        self.execute(
            "INSERT INTO tickets (platform, ticket_id, event_id, first_seen_at, state)"
            " VALUES (:platform, :ticket_id, :event_id, :now, :new) ON CONFLICT (platform, ticket_id) DO NOTHING",
            {"platform": platform, "ticket_id": ticket_id, "event_id": event_id, "now": now, "new": TicketState.NEW})
        record = self.get(platform, ticket_id)
        assert record is not None
        return record

    def release(self, record: TicketRecord) -> None:
        """Forget a claim that led to no decision (the event was not the ticket's first submission)."""
        self.execute("DELETE FROM tickets WHERE platform = :platform AND ticket_id = :ticket_id"
                     " AND event_id = :event_id AND decision IS NULL",
                     {"platform": record.platform, "ticket_id": record.ticket_id, "event_id": record.event_id})

    def get(self, platform: str, ticket_id: str) -> TicketRecord | None:
        """The ticket's record, if we've seen it."""
        rows = self.execute("SELECT * FROM tickets WHERE platform = :platform AND ticket_id = :ticket_id",
                            {"platform": platform, "ticket_id": ticket_id})
        if not rows:
            return None
        row = rows[0]
        return TicketRecord(
            platform=row["platform"], ticket_id=row["ticket_id"], event_id=row["event_id"], state=row["state"],
            first_seen_at=row["first_seen_at"],
            classification=Classification.model_validate_json(row["classification"]) if row["classification"] else None,
            decision=RoutingDecision.model_validate_json(row["decision"]) if row["decision"] else None,
            applied_at=row["applied_at"],
        )

    def save_decision(self, record: TicketRecord, *, classification: Classification, decision: RoutingDecision,
                      now: float, training_text: str | None = None) -> None:
        """Record the one classification this ticket will ever get, and what its Claude calls cost."""
        self.execute(
            "UPDATE tickets SET state = :decided, category = :category, confidence = :confidence, tier = :tier,"
            " guardrail = :guardrail, group_id = :group_id, priority = :priority, triage = :triage,"
            " classification = :classification, decision = :decision, model_version = :model_version,"
            " decided_at = :now, prompt_version = :prompt_version, training_text = :training_text,"
            " text_purged_at = NULL WHERE platform = :platform AND ticket_id = :ticket_id AND event_id = :event_id",
            {"decided": TicketState.DECIDED, "category": classification.category,
             "confidence": classification.confidence, "tier": classification.tier,
             "guardrail": classification.guardrail, "group_id": decision.group_id, "priority": decision.priority,
             "triage": int(decision.triage), "classification": classification.model_dump_json(),
             "decision": decision.model_dump_json(), "model_version": classification.model_version, "now": now,
             "prompt_version": classification.prompt_version, "training_text": training_text,
             "platform": record.platform, "ticket_id": record.ticket_id, "event_id": record.event_id})
        self.record_llm_calls(classification, platform=record.platform, ticket_id=record.ticket_id, now=now)
        record.state, record.classification, record.decision = TicketState.DECIDED, classification, decision

    def record_llm_calls(self, classification: Classification, *, platform: str | None, ticket_id: str | None,
                         now: float) -> None:
        """Keep the usage of every Claude call made for a classification."""
        for call in classification.llm_calls:
            self.execute(
                "INSERT INTO llm_calls (at, platform, ticket_id, model, outcome, prompt_version, latency_ms,"
                " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, error)"
                " VALUES (:at, :platform, :ticket_id, :model, :outcome, :prompt_version, :latency_ms,"
                " :input_tokens, :output_tokens, :cache_read_tokens, :cache_write_tokens, :cost_usd, :error)",
                {"at": now, "platform": platform, "ticket_id": ticket_id,
                 "prompt_version": classification.prompt_version,
                 **call.model_dump(include={"model", "outcome", "latency_ms", "input_tokens", "output_tokens",
                                            "cache_read_tokens", "cache_write_tokens", "cost_usd", "error"})})

    def distillable(self, *, min_confidence: float, decided_before: float) -> list[tuple[str, str, float]]:
        """(redacted text, category, decided at) of confident Claude decisions no one moved to another group."""
        rows = self.execute(
            "SELECT t.training_text, t.category, t.decided_at FROM tickets t"
            " WHERE t.tier = 'llm' AND t.category IS NOT NULL AND t.training_text IS NOT NULL"
            " AND t.confidence >= :min_confidence AND t.decided_at <= :before AND t.state = :done"
            # Conservative: any recorded move to another group, a correction or not, disqualifies it.
            " AND NOT EXISTS (SELECT 1 FROM group_changes g WHERE g.platform = t.platform"
            "   AND g.ticket_id = t.ticket_id AND g.group_id IS NOT NULL AND g.group_id != t.group_id)"
            " AND NOT EXISTS (SELECT 1 FROM corrections c WHERE c.platform = t.platform AND c.ticket_id = t.ticket_id)"
            " ORDER BY t.decided_at",
            {"min_confidence": min_confidence, "before": decided_before, "done": TicketState.DONE})
        return [(r["training_text"], r["category"], r["decided_at"]) for r in rows]

    def restore(self, record: TicketRecord, *, classification: Classification, decision: RoutingDecision) -> None:
        """Put back the classification and decision a Route again found on the ticket: the new one never
        landed there (people took the ticket on first). Nothing of the new one is kept to learn from."""
        self.execute(
            "UPDATE tickets SET category = :category, confidence = :confidence, tier = :tier, guardrail = :guardrail,"
            " group_id = :group_id, priority = :priority, triage = :triage, classification = :classification,"
            " decision = :decision, training_text = NULL"
            " WHERE platform = :platform AND ticket_id = :ticket_id AND event_id = :event_id",
            {"category": classification.category, "confidence": classification.confidence,
             "tier": classification.tier, "guardrail": classification.guardrail, "group_id": decision.group_id,
             "priority": decision.priority, "triage": int(decision.triage),
             "classification": classification.model_dump_json(), "decision": decision.model_dump_json(),
             "platform": record.platform, "ticket_id": record.ticket_id, "event_id": record.event_id})
        record.classification, record.decision = classification, decision

    def replace_decision(self, record: TicketRecord, decision: RoutingDecision, *, error: str | None) -> None:
        """Swap in another decision for the same classification: a fallback (triage, no ticket fields) after the
        helpdesk refused the first one, or the classification mapped again when a person retries it."""
        self.execute(
            "UPDATE tickets SET decision = :decision, group_id = :group_id, priority = :priority, triage = :triage,"
            " last_error = :error WHERE platform = :platform AND ticket_id = :ticket_id AND event_id = :event_id",
            {"decision": decision.model_dump_json(), "group_id": decision.group_id, "priority": decision.priority,
             "triage": int(decision.triage), "error": error, "platform": record.platform,
             "ticket_id": record.ticket_id, "event_id": record.event_id})
        record.decision = decision

    def finish(self, record: TicketRecord, *, state: TicketState, now: float, error: str | None = None) -> None:
        """Mark the routing written (done/triage), recorded only (shadow), or given up (dead)."""
        self.execute("UPDATE tickets SET state = :state, applied_at = :now, last_error = coalesce(:error, last_error)"
                     " WHERE platform = :platform AND ticket_id = :ticket_id",
                     {"state": state, "now": now, "error": error, "platform": record.platform,
                      "ticket_id": record.ticket_id})
        record.state, record.applied_at = state, now

    def to_check(self, *, routed_after: float, checked_before: float, limit: int) -> list[tuple[str, str]]:
        """Recently routed tickets whose re-routes were looked for least recently."""
        rows = self.execute(
            "SELECT platform, ticket_id FROM tickets WHERE state IN (:done, :triage) AND applied_at >= :after"
            " AND coalesce(reroute_checked_at, applied_at) < :before"
            " ORDER BY coalesce(reroute_checked_at, applied_at) LIMIT :limit",
            {"done": TicketState.DONE, "triage": TicketState.TRIAGE, "after": routed_after,
             "before": checked_before, "limit": limit})
        return [(r["platform"], r["ticket_id"]) for r in rows]

    def mark_checked(self, platform: str, ticket_id: str, *, now: float) -> None:
        """Remember when a ticket's re-routes were last looked for."""
        self.execute("UPDATE tickets SET reroute_checked_at = :now WHERE platform = :platform"
                     " AND ticket_id = :ticket_id", {"now": now, "platform": platform, "ticket_id": ticket_id})

    # --- group changes (kept for corrections) ---------------------------------------------------

    def add_group_change(self, event: ClaimedEvent, *, now: float) -> None:
        """Keep a group-change event; idempotent per event."""
        d = event.data
        self.execute(
            "INSERT INTO group_changes (event_id, platform, ticket_id, group_id, previous_group_id, actor_id, via,"
            " occurred_at, received_at) VALUES (:event_id, :platform, :ticket_id, :group_id, :previous_group_id,"
            " :actor_id, :via, :occurred_at, :now) ON CONFLICT (event_id) DO NOTHING",
            {"event_id": event.id, "platform": event.platform, "ticket_id": event.ticket_id, "now": now,
             **{k: d.get(k) for k in ("group_id", "previous_group_id", "actor_id", "via", "occurred_at")}})

    def group_changes(self, platform: str, ticket_id: str) -> list[dict[str, Any]]:
        """A ticket's group changes, oldest first."""
        return [dict(r) for r in self.execute(
            "SELECT * FROM group_changes WHERE platform = :platform AND ticket_id = :ticket_id ORDER BY id",
            {"platform": platform, "ticket_id": ticket_id})]
