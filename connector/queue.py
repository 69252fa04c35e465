"""The durable queue: enqueue idempotently, claim with a lease, complete, retry with backoff, dead-letter.

Rows live in the store's `events` table; this module holds the policy (lease length, backoff,
attempt limit). An event whose worker dies keeps its lease until it expires, then the next claim takes
it. Attempts are counted at claim time, so an event that keeps crashing its worker still dies.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from connector.models import EventState, TicketEvent
from connector.store import BUSY_MS, ClaimedEvent, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing event is retried."""

    max_attempts: int = 10
    base_seconds: float = 2.0
    max_seconds: float = 600.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter, never shorter than the helpdesk's Retry-After."""
        backoff = min(self.max_seconds, self.base_seconds * 2 ** max(attempts - 1, 0))
        backoff *= random.uniform(0.5, 1.0)
        return max(backoff, retry_after or 0.0)


class Queue:
    """Deskroute's event queue."""

    def __init__(self, store: Store, *, lease_seconds: float = 120.0, policy: RetryPolicy | None = None,
                 clock: Callable[[], float] | None = None):
        self.store = store
        self.lease_seconds = lease_seconds
        self.policy = policy or RetryPolicy()
        self.clock = clock or store.clock

    def enqueue(self, event: TicketEvent, *, busy_ms: int = BUSY_MS) -> tuple[int, bool]:
        """Store the event as a pending event, once: returns (event id, whether it was new)."""
        return self.store.events.insert(event, now=self.clock(), busy_ms=busy_ms)

    def claim(self, owner: str | None = None) -> ClaimedEvent | None:
        """Lease the next due event, or None if there is nothing to do."""
        now = self.clock()
        return self.store.events.claim(owner=owner or uuid.uuid4().hex, now=now, lease_until=now + self.lease_seconds,
                                      max_attempts=self.policy.max_attempts)

    def heartbeat(self, event: ClaimedEvent) -> bool:
        """Extend the lease of an event still being worked on; False if it was lost."""
        return self.store.events.extend_lease(event, until=self.clock() + self.lease_seconds)

    def complete(self, event: ClaimedEvent, *, state: EventState, outcome: str, error: str | None = None) -> bool:
        """Finish an event as done, triage or dead; False if the lease had been lost to another worker."""
        finished = self.store.events.finish(event, state=state, outcome=outcome, error=error, now=self.clock())
        if not finished:
            log.warning("event lease lost before completion",
                        extra={"event_id": event.id, "ticket_id": event.ticket_id})
        return finished

    def retry(self, event: ClaimedEvent, *, error: str, retry_after: float | None = None) -> EventState:
        """Schedule another attempt, or dead-letter the event once attempts run out. Returns the new state.
        `error` is stored, shown and logged: worker.describe_error's words, never ticket text."""
        if event.attempts >= self.policy.max_attempts:
            self.complete(event, state=EventState.DEAD, outcome="retries_exhausted", error=error)
            log.error("event dead-lettered", extra={"event_id": event.id, "platform": event.platform,
                                                  "ticket_id": event.ticket_id, "attempts": event.attempts,
                                                  "error": error})
            return EventState.DEAD
        delay = self.policy.delay(event.attempts, retry_after)
        self.store.events.reschedule(event, due_at=self.clock() + delay, error=error)
        log.info("event retry scheduled", extra={"event_id": event.id, "platform": event.platform,
                                               "ticket_id": event.ticket_id, "attempts": event.attempts,
                                               "delay_s": round(delay, 2), "error": error})
        return EventState.PENDING

    def dead_letter(self, event: ClaimedEvent, *, error: str) -> None:
        """Give up on an event now: it stays visible with its reason."""
        self.complete(event, state=EventState.DEAD, outcome="failed", error=error)
        log.error("event dead-lettered", extra={"event_id": event.id, "platform": event.platform,
                                              "ticket_id": event.ticket_id, "error": error})

