"""Read-only views for /metrics and the admin UI: counts, latencies, Claude usage and per-category accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.models import TicketState
from connector.store.db import Part

CONFIRMED = "agent_confirmed"  # a correction's `via` when an agent said the routing was right: not a re-route


@dataclass
class EventCount:
    platform: str
    kind: str
    state: str
    outcome: str | None
    n: int


@dataclass
class DecisionCount:
    platform: str
    tier: str
    n: int


@dataclass
class LlmUsage:
    """Claude calls, tokens and estimated cost for one model and outcome."""

    model: str
    outcome: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


class Stats(Part):
    """Aggregates over events, tickets, corrections and llm_calls."""

    def event_counts(self) -> list[EventCount]:
        """Accepted events by platform, kind, state and outcome."""
        return [EventCount(**r) for r in self.execute(
            "SELECT platform, kind, state, outcome, count(*) AS n FROM events GROUP BY platform, kind, state, outcome")]

    def decision_counts(self) -> list[DecisionCount]:
        """Decided tickets by platform and tier."""
        return [DecisionCount(**r) for r in self.execute(
            "SELECT platform, tier, count(*) AS n FROM tickets WHERE tier IS NOT NULL GROUP BY platform, tier")]

    def llm_usage(self) -> list[LlmUsage]:
        """Claude calls, tokens and estimated cost by model and outcome."""
        rows = self.execute(
            "SELECT model, outcome, count(*) AS calls, coalesce(sum(input_tokens), 0) AS input_tokens,"
            " coalesce(sum(output_tokens), 0) AS output_tokens,"
            " coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,"
            " coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens, coalesce(sum(cost_usd), 0) AS cost_usd"
            " FROM llm_calls GROUP BY model, outcome")
        return [LlmUsage(**{**r, "cost_usd": float(r["cost_usd"])}) for r in rows]

    def latency_histogram(self, buckets: tuple[float, ...]) -> tuple[list[int], float, int]:
        """Cumulative counts of received-to-finished seconds per bucket, their sum, and the count."""
        cases = ", ".join(f"sum(CASE WHEN finished_at - received_at <= {float(b)!r} THEN 1 ELSE 0 END) AS b{i}"
                          for i, b in enumerate(buckets))
        row = self.execute(f"SELECT {cases}, sum(finished_at - received_at) AS total, count(*) AS n FROM events"
                           " WHERE finished_at IS NOT NULL")[0]
        return ([int(row[f"b{i}"] or 0) for i in range(len(buckets))], float(row["total"] or 0.0), int(row["n"]))

    def accuracy(self, *, now: float, within_hours: float, days: float) -> list[dict[str, Any]]:
        """Per category: tickets routed in the last `days` (old enough to judge), and how many agents
        moved (or said in the sidebar were wrong) within `within_hours` of routing. A correction a team lead
        rejected doesn't count (Deskroute was right), nor one that names a category of the same group (the
        routing was right; only the label changes, as when an agent settles a group-level decision)."""
        rows = self.execute(
            "SELECT t.platform, t.category, count(*) AS routed, sum(CASE WHEN EXISTS (SELECT 1 FROM corrections c"
            "  WHERE c.platform = t.platform AND c.ticket_id = t.ticket_id AND coalesce(c.via, '') != :confirmed"
            "  AND c.status != 'rejected' AND c.rerouted_at <= t.applied_at + :within"
            "  AND NOT (c.corrected_group_id IS NOT NULL AND c.corrected_group_id = c.predicted_group_id))"
            " THEN 1 ELSE 0 END) AS rerouted"
            " FROM tickets t WHERE t.state = :done AND t.category IS NOT NULL"
            " AND t.applied_at >= :since AND t.applied_at <= :until GROUP BY t.platform, t.category"
            " ORDER BY t.category",
            {"within": within_hours * 3600, "done": TicketState.DONE, "confirmed": CONFIRMED,
             "since": now - days * 86400, "until": now - within_hours * 3600})
        return [{**r, "accuracy": 1 - r["rerouted"] / r["routed"]} for r in rows]

    def overview(self, *, since: float) -> dict[str, Any]:
        """Counts since a time: tickets decided, by tier, triage share, processing latency, Claude cost."""
        tiers = {r["tier"]: r["n"] for r in self.execute(
            "SELECT tier, count(*) AS n FROM tickets WHERE decided_at >= :since GROUP BY tier", {"since": since})}
        latencies = [r["s"] for r in self.execute(
            "SELECT finished_at - received_at AS s FROM events WHERE finished_at >= :since"
            " AND kind = 'ticket.created' ORDER BY s", {"since": since})]
        cost = self.execute("SELECT coalesce(sum(cost_usd), 0) AS usd, count(*) AS calls FROM llm_calls"
                            " WHERE at >= :since", {"since": since})[0]
        total = sum(tiers.values())

        def pct(q: float) -> float | None:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

        return {"tickets": total, "by_tier": tiers, "triage_rate": tiers.get("triage", 0) / total if total else None,
                "p50_seconds": pct(0.5), "p95_seconds": pct(0.95), "llm_cost_usd": float(cost["usd"]),
                "llm_calls": cost["calls"]}

    def category_mix(self, *, since: float) -> list[tuple[str, str, int]]:
        """(UTC day, category or "triage", tickets) decided since a time."""
        day = ("date(decided_at, 'unixepoch')" if self.db.sqlite
               else "to_char(to_timestamp(decided_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
        rows = self.execute(
            f"SELECT {day} AS day, coalesce(category, 'triage') AS category, count(*) AS n"
            " FROM tickets WHERE decided_at >= :since GROUP BY 1, 2 ORDER BY 1", {"since": since})
        return [(r["day"], r["category"], r["n"]) for r in rows]

    def recent_tickets(self, *, search: str = "", state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Recent decisions, newest first, with the event's state and whether an agent re-routed the ticket."""
        where = ["1 = 1"]
        if search:  # lower() both sides: LIKE is case-blind on SQLite, not on PostgreSQL
            where.append("(t.ticket_id = :search OR lower(t.category) LIKE :like OR t.tier = :search"
                         " OR lower(t.decision) LIKE :like)")
        if state:
            where.append("(t.state = :state OR e.state = :state)")
        rows = self.execute(
            "SELECT t.platform, t.ticket_id, t.state, t.category, t.confidence, t.tier, t.guardrail, t.decided_at,"
            " t.decision, t.last_error, e.id AS event_id, e.state AS event_state, e.last_error AS event_error,"
            " CASE WHEN EXISTS (SELECT 1 FROM corrections c WHERE c.platform = t.platform"
            "  AND c.ticket_id = t.ticket_id AND coalesce(c.via, '') != :confirmed) THEN 1 ELSE 0 END AS rerouted"
            " FROM tickets t LEFT JOIN events e ON e.id = t.event_id"
            f" WHERE {' AND '.join(where)} ORDER BY t.first_seen_at DESC LIMIT :limit",
            {"search": search, "like": f"%{search.lower()}%", "state": state, "limit": limit,
             "confirmed": CONFIRMED})
        return [dict(r) for r in rows]


