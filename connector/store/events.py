"""Events: the durable queue's rows. Insert once per dedup key, claim with a lease, finish, retry.

On PostgreSQL a claim locks the row it takes with `FOR UPDATE SKIP LOCKED`: two workers never take one
event, and none waits behind another's claim. SQLite has one writer at a time, so its claim is a plain
`UPDATE ... WHERE id = (SELECT ...)`. Inserting an event notifies `deskroute_events` on PostgreSQL
(a trigger, migration 0002), which wakes idle workers on every machine.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from connector.models import EventState, TicketEvent, TicketState
from connector.store.db import BUSY_MS, Part

log = logging.getLogger(__name__)
CHANNEL = "deskroute_events"
# Set in an event's data by a retry that asks for the ticket to be classified afresh (Route again).
RECLASSIFY = "reclassify"
# TicketEvent fields with columns of their own; the rest go into events.data as JSON.
_COLUMNS = {"platform", "kind", "ticket_id", "dedup_key", "source_id"}
_RETURNED = "id, platform, kind, ticket_id, dedup_key, attempts, received_at, data"


@dataclass
class ClaimedEvent:
    """A claimed event."""

    id: int
    platform: str
    kind: str
    ticket_id: str
    attempts: int
    received_at: float
    owner: str
    data: dict[str, Any] = field(default_factory=dict)
    dedup_key: str = ""


@dataclass
class QueueHealth:
    counts: dict[str, int]  # events by state
    oldest_waiting_seconds: float | None  # the oldest pending or running event's age


class Events(Part):
    """The `events` table."""

    def insert(self, event: TicketEvent, *, now: float, busy_ms: int = BUSY_MS) -> tuple[int, bool]:
        """Store an event unless its dedup key is known; returns (event id, whether it was new)."""
        data = event.model_dump(mode="json", exclude=_COLUMNS, exclude_none=True)
        row = {"platform": event.platform, "kind": event.kind, "ticket_id": event.ticket_id,
               "dedup_key": event.dedup_key, "source_id": event.source_id,
               "data": json.dumps(data) if data else None, "now": now, "state": EventState.PENDING}
        rows = self.execute(
            "INSERT INTO events (platform, kind, ticket_id, dedup_key, source_id, data, received_at, state, due_at)"
            " VALUES (:platform, :kind, :ticket_id, :dedup_key, :source_id, :data, :now, :state, :now)"
            " ON CONFLICT (platform, dedup_key) DO NOTHING RETURNING id", row, busy_ms=busy_ms)
        if rows:
            return rows[0]["id"], True
        existing = self.execute("SELECT id FROM events WHERE platform = :platform AND dedup_key = :dedup_key",
                                row, busy_ms=busy_ms)
        return existing[0]["id"], False

    def claim(self, *, owner: str, now: float, lease_until: float,
              max_attempts: int | None = None) -> ClaimedEvent | None:
        """Take the oldest due event: a pending one, or a running one whose lease has expired.

        A running event whose lease expired has lost its worker (killed, OOM). Once it has had
        `max_attempts`, the claim dead-letters it instead and takes the next: an event that keeps
        killing its worker dies itself. (An idle poll is the one statement it always was.)
        """
        params = {"running": EventState.RUNNING, "pending": EventState.PENDING, "owner": owner,
                  "lease_until": lease_until, "now": now}
        due = ("SELECT id FROM events WHERE state IN (:pending, :running) AND due_at <= :now"
               " ORDER BY due_at, id LIMIT 1")
        if self.db.sqlite:
            sql = (f"UPDATE events SET state = :running, attempts = attempts + 1, lease_owner = :owner,"
                   f" due_at = :lease_until WHERE id = ({due}) RETURNING {_RETURNED}")
        else:
            sql = (f"WITH next AS ({due} FOR UPDATE SKIP LOCKED) UPDATE events SET state = :running,"
                   f" attempts = events.attempts + 1, lease_owner = :owner, due_at = :lease_until FROM next"
                   f" WHERE events.id = next.id RETURNING {', '.join('events.' + c for c in _RETURNED.split(', '))}")
        while True:
            rows = self.execute(sql, params)
            if not rows:
                return None
            row = rows[0]
            event = ClaimedEvent(id=row["id"], platform=row["platform"], kind=row["kind"], ticket_id=row["ticket_id"],
                      attempts=row["attempts"], received_at=row["received_at"], owner=owner,
                      data=json.loads(row["data"] or "{}"), dedup_key=row["dedup_key"])
            if max_attempts is None or event.attempts <= max_attempts:
                return event
            # Past the limit only when the last allowed attempt's lease ran out: its worker died.
            self._dead_letter_unrun(event, now=now)

    def _dead_letter_unrun(self, event: ClaimedEvent, *, now: float) -> None:
        """Dead-letter an event just claimed past its attempts (the claim didn't run it, so it doesn't count)."""
        error = f"worker died or lost its lease on attempt {event.attempts - 1}, the last allowed"
        params = {"dead": EventState.DEAD, "error": error, "now": now, "id": event.id, "owner": event.owner,
                  "platform": event.platform, "ticket_id": event.ticket_id, "done": TicketState.DONE,
                  "triage": TicketState.TRIAGE, "shadow": TicketState.SHADOW}
        self.execute("UPDATE events SET state = :dead, attempts = attempts - 1, outcome = 'worker_died',"
                     " last_error = :error, finished_at = :now, lease_owner = NULL WHERE id = :id"
                     " AND lease_owner = :owner", params)
        self.execute("UPDATE tickets SET state = :dead, applied_at = :now, last_error = :error"
                     " WHERE platform = :platform AND ticket_id = :ticket_id AND event_id = :id"
                     " AND state NOT IN (:done, :triage, :shadow)", params)
        log.error("event dead-lettered", extra={"event_id": event.id, "ticket_id": event.ticket_id, "why": error})

    def _owned(self, sql: str, event: ClaimedEvent, **params: Any) -> bool:
        rows = self.execute(f"{sql} WHERE id = :id AND lease_owner = :owner AND state = :running RETURNING id",
                            {**params, "id": event.id, "owner": event.owner, "running": EventState.RUNNING})
        return bool(rows)

    def extend_lease(self, event: ClaimedEvent, *, until: float) -> bool:
        """Keep a long event ours; False if the lease was lost."""
        return self._owned("UPDATE events SET due_at = :until", event, until=until)

    def finish(self, event: ClaimedEvent, *, state: EventState, outcome: str, error: str | None, now: float) -> bool:
        """Record a final state; False if another worker holds the event now (our lease expired)."""
        assert EventState(state).final
        # A finished Route again's flag goes: it holds a copy of the ticket's classification (Claude's summary
        # included), which retention must find in one place. A dead one keeps it until retried (or purged).
        rest = {k: v for k, v in event.data.items() if k != RECLASSIFY}
        forget = ", data = :data" if RECLASSIFY in event.data and state != EventState.DEAD else ""
        return self._owned("UPDATE events SET state = :state, outcome = :outcome, last_error = :error,"
                           f" finished_at = :now, lease_owner = NULL{forget}", event, state=state, outcome=outcome,
                           error=error, now=now, data=json.dumps(rest) if rest else None)

    def reschedule(self, event: ClaimedEvent, *, due_at: float, error: str) -> bool:
        """Put an event back for a later attempt; False if the lease was lost."""
        return self._owned("UPDATE events SET state = :pending, due_at = :due_at, last_error = :error,"
                           " lease_owner = NULL", event, pending=EventState.PENDING, due_at=due_at, error=error)

    def get(self, event_id: int) -> dict[str, Any]:
        """One event row, for the CLI, the admin UI and tests."""
        rows = self.execute("SELECT * FROM events WHERE id = :id", {"id": event_id})
        if not rows:
            raise KeyError(event_id)
        return dict(rows[0])

    def forget_route_again_copies(self, before: float) -> int:
        """Drop the Route again flags (copies of a ticket's classification) of events finished before `before`."""
        rows = self.execute("SELECT id, data FROM events WHERE data LIKE :flag AND finished_at < :before",
                            {"flag": f'%"{RECLASSIFY}"%', "before": before})
        for row in rows:
            rest = {k: v for k, v in json.loads(row["data"]).items() if k != RECLASSIFY}
            self.execute("UPDATE events SET data = :data WHERE id = :id AND finished_at < :before",  # not retried
                         {"data": json.dumps(rest) if rest else None, "id": row["id"], "before": before})
        return len(rows)

    def recent(self, *, state: EventState | str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Most recent events first, optionally in one state."""
        where = "WHERE state = :state" if state else ""
        rows = [dict(r) for r in self.execute(f"SELECT * FROM events {where} ORDER BY id DESC LIMIT :limit",
                                              {"state": state, "limit": limit})]
        for row in rows:  # older versions queued the sidebar's text job as a group change: name it as it is
            if row["kind"] == "ticket.group_changed" and row["dedup_key"].startswith("feedback:"):
                row["kind"] = "correction.text_needed"
        return rows

    def health(self, *, now: float) -> QueueHealth:
        """Counts by state and the age of the oldest event still waiting."""
        counts = {r["state"]: r["n"] for r in self.execute("SELECT state, count(*) AS n FROM events GROUP BY state")}
        oldest = self.execute("SELECT min(received_at) AS t FROM events WHERE state IN (:pending, :running)",
                              {"pending": EventState.PENDING, "running": EventState.RUNNING})[0]["t"]
        return QueueHealth(counts, round(now - oldest, 3) if oldest is not None else None)

    def requeue(self, event_id: int, *, now: float, reclassify: bool = False) -> bool:
        """Send a finished (dead, triage, done) event through the pipeline again; with reclassify, ask the
        worker to classify its ticket afresh (unless people have taken it on since). One transaction: a worker
        must not take the event up between the updates (it would find the ticket finished)."""
        params = {"id": event_id, "now": now, "pending": EventState.PENDING, "dead": EventState.DEAD,
                  "triage": EventState.TRIAGE, "done": EventState.DONE, "new": TicketState.NEW,
                  "decided": TicketState.DECIDED}
        with self.db.transaction() as tx:
            lock = "" if self.db.sqlite else " FOR UPDATE"  # SQLite's write transaction already excludes others
            before = tx.execute(f"SELECT state FROM events WHERE id = :id{lock}", params)
            rows = tx.execute(
                "UPDATE events SET state = :pending, due_at = :now, attempts = 0, outcome = NULL, last_error = NULL,"
                " finished_at = NULL, lease_owner = NULL WHERE id = :id AND state IN (:dead, :triage, :done)"
                " RETURNING platform, ticket_id, data", params)
            if not rows:
                return False
            params.update(platform=rows[0]["platform"], ticket_id=rows[0]["ticket_id"])
            # The ticket's decision stays until the worker has looked at the ticket. A Route again's flag carries
            # what was on it (decision, classification, state), so that every attempt tells our own writes from
            # people's moves; a Route again that died is finished by any retry, with that same flag.
            data = json.loads(rows[0]["data"] or "{}")
            unfinished = data.pop(RECLASSIFY, None) if before[0]["state"] == EventState.DEAD else None
            data.pop(RECLASSIFY, None)
            if unfinished:
                data[RECLASSIFY] = unfinished
            elif reclassify:
                found = tx.execute("SELECT classification, decision, state FROM tickets WHERE platform = :platform"
                                   " AND ticket_id = :ticket_id AND event_id = :id", params)
                row = dict(found[0]) if found else {"classification": None, "decision": None, "state": None}
                data[RECLASSIFY] = {"applied": json.loads(row["decision"] or "null"),
                                    "classification": json.loads(row["classification"] or "null"),
                                    "state": row["state"]}
            params["data"] = json.dumps(data) if data else None
            tx.execute("UPDATE events SET data = :data WHERE id = :id", params)
            tx.execute("UPDATE tickets SET state = CASE WHEN decision IS NULL THEN :new ELSE :decided END"
                       " WHERE platform = :platform AND ticket_id = :ticket_id AND event_id = :id", params)
        self.db.notify(CHANNEL)  # an update, which the insert trigger doesn't see
        return True

