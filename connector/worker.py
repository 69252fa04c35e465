"""The loop that drains the queue, and the pipeline each event goes through.

ticket.created: gate (first event owns the ticket) -> fetch -> classify once -> decide -> apply.
ticket.group_changed: kept for the corrections feature.
correction.text_needed: an agent's sidebar feedback, kept at once, gets the ticket's redacted text.

Exactly-once write-back: the decision is stored before the write, every write carries ROUTED_TAG,
and a retried event (crash, lost lease, ambiguous timeout, a person's retry) re-reads the ticket first;
the adapter's apply() then skips whatever an earlier attempt already wrote. A retried ticket that shows
nothing of ours yet is mapped again with the live mappings (Worker._remap), so a fixed group is written.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.classify.clean import is_auto_reply
from connector.classify.redact import redact
from connector.corrections import FEEDBACK_PREFIX, Reconciler, unrouted_text
from connector.mappings import triage_instead
from connector.models import ROUTED_TAG, Classification, EventState, RoutingDecision, Ticket, TicketState
from connector.queue import Queue
from connector.router import Router
from connector.store import ClaimedEvent, Store, StoreUnavailable, TicketRecord
from connector.store.events import RECLASSIFY
from platforms.base import LeaseLost, Platform, PlatformError

log = logging.getLogger(__name__)

# A safe update that keeps hitting 409 (an agent editing the ticket right now) is retried this often.
MAX_CONFLICTS = 3
# A ticket.created event this long after the ticket was created is not its arrival: helpdesks deliver within
# minutes (and a backlog waits in our queue from its receipt, not from now).
NEW_TICKET_SECONDS = 24 * 3600


def describe_error(exc: BaseException) -> str:
    """Exception type and where it happened; never its message, which might quote ticket text."""
    if isinstance(exc, PlatformError):
        return str(exc)  # built by our adapters from status codes and error keys only
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}{where}"


def moved_by_people(decision: RoutingDecision, ticket: Ticket, *, also_ours: frozenset[str | None] = frozenset()
                    ) -> bool:
    """Our routing landed on the ticket (it carries ROUTED_TAG) and it is in another group now (than the
    decision's, or `also_ours`: where an earlier routing of ours put it): people moved it since, and a retry
    must not move it back."""
    return ROUTED_TAG in ticket.tags and ticket.group_id != decision.group_id and ticket.group_id not in also_ours


def _landed(decision: RoutingDecision, ticket: Ticket) -> bool:
    """Whether this decision of ours is written on the ticket: its tags are on it (ours stay until a later
    decision of ours replaces them; a decision applied before may have lost them since: the Route again flag's
    state says so)."""
    return ROUTED_TAG in ticket.tags and set(decision.tags) <= set(ticket.tags)


def _also_ours(decision: RoutingDecision | None, on_ticket: RoutingDecision | None,
               ticket: Ticket) -> frozenset[str | None]:
    """Groups besides `decision`'s that a write of ours put the ticket in: the group of the decision a Route
    again found on it, until the new decision has landed (after that, a move back there is people's)."""
    if on_ticket is None:
        return frozenset()
    if decision is not None and decision != on_ticket:
        own = set(decision.tags) - set(on_ticket.tags)
        if own and own <= set(ticket.tags):
            return frozenset()
    return frozenset({on_ticket.group_id})


def _applied(route_again: Any) -> tuple[RoutingDecision | None, Classification | None, str | None]:
    """What a Route again found: the ticket's decision and classification (None: none) and its state."""
    if not isinstance(route_again, dict):
        return None, None, None
    decision, classification = route_again.get("applied"), route_again.get("classification")
    return (RoutingDecision.model_validate(decision) if decision else None,
            Classification.model_validate(classification) if classification else None, route_again.get("state"))


def fields_may_be_refused(exc: PlatformError, decision: RoutingDecision) -> bool:
    """Whether the helpdesk may have refused a write for its ticket fields: it named one of them, or it doesn't
    say which fields it refused."""
    if not decision.fields:
        return False
    return exc.refused_fields is None or any(name in decision.fields for name in exc.refused_fields)


class Worker:
    """Processes one event at a time from the queue."""

    def __init__(self, *, queue: Queue, store: Store, router: Router, platforms: dict[str, Platform],
                 shadow: bool = False, clock: Callable[[], float] | None = None, name: str | None = None,
                 distill_min_confidence: float | None = None, reconciler: Reconciler | None = None,
                 before_job: Callable[[], None] = lambda: None,
                 before_classify: Callable[[], None] = lambda: None, keep_unrouted: bool = False):
        self.before_job = before_job
        self.keep_unrouted = keep_unrouted
        self.before_classify = before_classify
        self.distill_min_confidence = distill_min_confidence
        self.reconciler = reconciler
        self.queue = queue
        self.store = store
        self.router = router
        self.platforms = platforms
        self.shadow = shadow
        self.clock = clock or store.clock
        self.owner = name or f"worker-{uuid.uuid4().hex[:12]}"

    def run_once(self) -> bool:
        """Claim and process one event; False if there was none."""
        # Housekeeping (a configuration reload may retrain the model) before the claim, not on the lease's time.
        self.before_job()
        event = self.queue.claim(self.owner)
        if event is None:
            return False
        self.process(event)
        return True

    def _still_ours(self, event: ClaimedEvent) -> None:
        """Extend the lease before a slow step; raise LeaseLost if another worker has the event now."""
        if not self.queue.heartbeat(event):
            raise LeaseLost(f"lease on event {event.id} lost")

    def run(self, stop: threading.Event, wake: threading.Event, poll_seconds: float) -> None:
        """Work until stopped, sleeping `poll_seconds` (or until woken) when the queue is empty."""
        outage = 0.0  # seconds to wait while the database is unreachable: 1, 2, 4... up to a minute
        while not stop.is_set():
            try:
                worked = self.run_once()
                if outage:
                    log.info("database reachable again")
                outage = 0.0
            except StoreUnavailable as exc:  # a restart or failover: wait it out, quietly and without a storm
                if not outage:
                    log.error("database unavailable; waiting for it", extra={"error": str(exc)})
                outage = min(outage * 2 or 1.0, 60.0)
                stop.wait(outage)
                continue
            except Exception as exc:  # a bug: log, back off, go on
                log.error("worker loop error", extra={"error": describe_error(exc)})
                worked = False
            if not worked:
                wake.wait(poll_seconds)
                wake.clear()

    def process(self, event: ClaimedEvent) -> None:
        """Run one event to a final state or a scheduled retry; never raises."""
        ids = {"event_id": event.id, "platform": event.platform, "ticket_id": event.ticket_id,
               "attempt": event.attempts}
        platform = self.platforms.get(event.platform)
        if platform is None:
            self.queue.dead_letter(event, error=f"{event.platform} is not configured")
            return
        try:
            if event.kind == "ticket.created":
                state, outcome = self._route(event, platform)
            elif event.kind == "correction.text_needed" or event.dedup_key.startswith(FEEDBACK_PREFIX):
                # Older versions queued this job as a ticket.group_changed keyed by the correction: not a move.
                filled = 0 if self.reconciler is None else self.reconciler.fill_text(event.platform, event.ticket_id)
                state, outcome = EventState.DONE, f"text for {filled} correction(s)"
            elif event.kind == "ticket.group_changed":
                self.store.tickets.add_group_change(event, now=self.clock())
                found = 0 if self.reconciler is None else self.reconciler.reconcile(
                    event.platform, event.ticket_id, actor_hint=event.data.get("actor_id"))
                state, outcome = EventState.DONE, f"{found} correction(s)" if found else "no correction"
            else:
                state, outcome = EventState.DEAD, f"unknown event kind {event.kind}"
            self.queue.complete(event, state=state, outcome=outcome)
            log.info("event finished", extra={**ids, "state": state, "outcome": outcome})
        except LeaseLost:
            # Took longer than the lease: another worker has the event and will finish it. Write nothing more.
            log.warning("event lease lost; leaving the event to its new owner", extra=ids)
        except PlatformError as exc:
            if exc.retryable:
                self._retry(event, str(exc), exc.retry_after)
            else:
                self._mark_ticket_dead(event, str(exc))
                self.queue.dead_letter(event, error=str(exc))
        except Exception as exc:  # a bug must not lose the event: retry, and dead-letter in the end
            error = describe_error(exc)
            log.error("event failed unexpectedly", extra={**ids, "error": error})
            self._retry(event, error, None)

    def _retry(self, event: ClaimedEvent, error: str, retry_after: float | None) -> None:
        if self.queue.retry(event, error=error, retry_after=retry_after) == EventState.DEAD:
            self._mark_ticket_dead(event, error)

    def _mark_ticket_dead(self, event: ClaimedEvent, error: str) -> None:
        """Show on the ticket's record too that its routing was given up."""
        record = self.store.tickets.get(event.platform, event.ticket_id)
        if record is not None and record.event_id == event.id:
            self.store.tickets.finish(record, state=TicketState.DEAD, now=self.clock(), error=error)

    # --- ticket.created --------------------------------------------------------------------------

    def _route(self, event: ClaimedEvent, platform: Platform) -> tuple[EventState, str]:
        now = self.clock()
        record = self.store.tickets.claim(platform=event.platform, ticket_id=event.ticket_id, event_id=event.id,
                                          now=now)
        if record.event_id != event.id:
            return EventState.DONE, "duplicate"  # another event already owns this ticket's one classification
        if record.state in (TicketState.DONE, TicketState.TRIAGE, TicketState.SHADOW):
            return (EventState.TRIAGE if record.state == TicketState.TRIAGE else EventState.DONE), "already_applied"
        ticket = platform.fetch_ticket(event.ticket_id)  # just claimed: the lease is fresh until here
        route_again = event.data.get(RECLASSIFY)  # a person asked for it to be classified afresh (Route again)
        applied, applied_as, prior_state = _applied(route_again)  # the decision on the ticket when they asked
        written = prior_state in (TicketState.DONE, TicketState.TRIAGE)  # (its tags may have gone since)
        on_ticket = applied if applied is not None and (written or _landed(applied, ticket)) else None
        also_ours = _also_ours(record.decision, on_ticket, ticket)
        taken_on = bool(route_again or ROUTED_TAG in ticket.tags) and self._taken_on(record, ticket)
        if route_again:
            if taken_on or (record.decision is not None
                            and moved_by_people(record.decision, ticket, also_ours=also_ours)):
                return self._leave(record, event, "moved_by_people", ticket=ticket, on_ticket=on_ticket,
                                   on_ticket_as=applied_as, prior_state=prior_state)
            if record.decision is None or record.decision == applied:  # not yet classified afresh
                record.decision = None
        if record.decision is not None:
            before = record.decision
            if self._remap(event, record, ticket) and _landed(before, ticket):
                also_ours |= {before.group_id}  # where the refused route's triage fallback put it: ours too
                on_ticket = before
            elif record.decision == before and moved_by_people(record.decision, ticket, also_ours=also_ours):
                return self._leave(record, event, "moved_by_people", ticket=ticket, on_ticket=on_ticket,
                                   on_ticket_as=applied_as)
        else:
            # A ticket that carries our routing is no new arrival: it is being routed again.
            not_new = None if route_again or ROUTED_TAG in ticket.tags else self._not_new(event, ticket)
            if not_new:
                self.store.tickets.release(record)
                log.warning("ticket.created for a ticket that is not new: left alone", extra={
                    "event_id": event.id, "platform": event.platform, "ticket_id": event.ticket_id, "why": not_new})
                return EventState.DONE, "not_new"
            self.before_classify()
            self._still_ours(event)  # the fetch may have waited out rate limits
            classification = self.router.classify(ticket.text, event.platform)
            decision = self.router.decide(event.platform, classification)
            self._still_ours(event)  # Claude may have taken its whole budget
            self.store.tickets.save_decision(record, classification=classification, decision=decision,
                                             now=self.clock(),
                                             training_text=self._training_text(ticket, classification))
            log.info("ticket classified", extra={
                "event_id": event.id, "platform": event.platform, "ticket_id": event.ticket_id,
                "tier": classification.tier, "category": classification.category,
                "confidence": round(classification.confidence, 3), "guardrail": classification.guardrail,
                "classify_ms": classification.latency_ms})
            if self.keep_unrouted and decision.triage:
                self._keep_unrouted(record, ticket, classification, decision)
            if not route_again and ROUTED_TAG in ticket.tags and taken_on:
                # Routed before, its decision wiped by an older release's Route again: people have it now.
                return self._leave(record, event, "moved_by_people")
        if self.shadow or not self.router.live(record.decision.category if record.decision else None):
            self.store.tickets.finish(record, state=TicketState.SHADOW, now=self.clock())
            return EventState.DONE, "shadow"
        return self._write(event, platform, record, ticket, also_ours=also_ours, on_ticket=on_ticket,
                           on_ticket_as=applied_as if on_ticket is applied else None)

    @staticmethod
    def _not_new(event: ClaimedEvent, ticket: Ticket) -> str | None:
        """Why a ticket.created event is not the ticket's first submission, if it isn't. Deskroute classifies a
        ticket once, when it arrives: an event about an old ticket is a misfired rule, or a forged or replayed
        one (Freshdesk's header token doesn't expire), and routing it would move a ticket people settled."""
        if ticket.solved:
            return "already solved"
        age = ticket.age_at(event.received_at)
        if age is not None and age > NEW_TICKET_SECONDS:
            return f"created {age / 3600:.0f} h before the event"
        return None

    def _taken_on(self, record: TicketRecord, ticket: Ticket) -> bool:
        """People have the ticket: it is assigned, answered or settled, or someone moved it (a correction)."""
        return ticket.taken_up or bool(self.store.corrections.for_ticket(record.platform, record.ticket_id))

    def _remap(self, event: ClaimedEvent, record: TicketRecord, ticket: Ticket) -> bool:
        """A ticket decided before (its event retried by the queue, or by hand): map its one classification again
        with the live mappings, so that a group an admin fixed since is the one written; True if it did. Only
        while nothing of ours is on the ticket (what landed stays: a retry never writes a ticket twice), or
        while it still sits, untouched by people (not moved, assigned, answered or settled), in the triage group
        that a refused route sent it to."""
        stored = record.decision
        if stored is None or record.classification is None:
            return False
        self.before_classify()  # the mappings as saved now, by whichever process
        self._still_ours(event)  # the fetch may have waited out rate limits
        fresh = self.router.decide(event.platform, record.classification)
        if fresh == stored:
            return False
        if ROUTED_TAG in ticket.tags:
            parked = (stored.triage and not fresh.triage and ticket.group_id == stored.group_id
                      and not self._taken_on(record, ticket))
            if not parked:
                return False
        self.store.tickets.replace_decision(record, fresh, error=None)
        log.info("decision mapped again with the live mappings", extra={
            "event_id": event.id, "platform": event.platform, "ticket_id": event.ticket_id,
            "group_id": fresh.group_id})
        return True

    def _leave(self, record: TicketRecord, event: ClaimedEvent, outcome: str, *, ticket: Ticket | None = None,
               on_ticket: RoutingDecision | None = None, on_ticket_as: Classification | None = None,
               prior_state: str | None = None) -> tuple[EventState, str]:
        """Write nothing: people have moved the ticket since our routing landed, and theirs is the last word.
        The record keeps the decision that is on the ticket (`on_ticket`, classified as `on_ticket_as`: an
        earlier one of ours, when the one decided since never landed), or, when nothing of ours is on it, the
        state it had (`prior_state`)."""
        log.info("ticket moved by people since our routing: left as it is", extra={
            "event_id": event.id, "platform": event.platform, "ticket_id": event.ticket_id})
        if ticket is not None and on_ticket is not None and record.decision != on_ticket \
                and not (record.decision is not None and _landed(record.decision, ticket)):
            if on_ticket_as is not None:
                self.store.tickets.restore(record, classification=on_ticket_as, decision=on_ticket)
            else:
                self.store.tickets.replace_decision(record, on_ticket, error=None)
        if record.decision is None or (ticket is not None and ROUTED_TAG not in ticket.tags
                                       and prior_state in (TicketState.DEAD, TicketState.SHADOW)):
            state = TicketState(prior_state) if prior_state in (TicketState.DEAD, TicketState.SHADOW) \
                else TicketState.DEAD
            self.store.tickets.finish(record, state=state, now=self.clock())
            return EventState.DONE, outcome
        triage = record.decision.triage
        self.store.tickets.finish(record, state=TicketState.TRIAGE if triage else TicketState.DONE, now=self.clock())
        return (EventState.TRIAGE, outcome) if triage else (EventState.DONE, outcome)

    def _training_text(self, ticket: Ticket, classification: Classification) -> str | None:
        """The redacted text of a confident Claude decision, kept to become a local training example."""
        if (self.distill_min_confidence is None or classification.tier != "llm" or classification.category is None
                or classification.confidence < self.distill_min_confidence):
            return None
        return redact(ticket.text)

    def _keep_unrouted(self, record: TicketRecord, ticket: Ticket, classification: Classification,
                       decision: RoutingDecision) -> None:
        """Keep a triaged ticket's redacted text for taxonomy suggestions: no category took it. Not when a
        guardrail sent it to people (a category wouldn't change that), nor an automatic reply (nothing asked)."""
        if classification.guardrail is not None or is_auto_reply(ticket.text):
            return
        guesses = sorted((t for t in classification.tiers if t.category), key=lambda t: t.confidence, reverse=True)
        try:
            self.store.suggestions.keep(
                platform=record.platform, ticket_id=record.ticket_id, text=unrouted_text(ticket.text),
                reason="triage", guess=guesses[0].category if guesses else None,
                guess_confidence=guesses[0].confidence if guesses else None, group_id=decision.group_id,
                now=self.clock())
        except Exception as exc:  # a suggestion is never worth a ticket's routing
            log.warning("couldn't keep a triaged ticket for suggestions", extra={
                "platform": record.platform, "ticket_id": record.ticket_id, "error": describe_error(exc)})

    def _write(self, event: ClaimedEvent, platform: Platform, record: TicketRecord, ticket: Ticket, *,
               also_ours: frozenset[str | None] = frozenset(),
               on_ticket: RoutingDecision | None = None,
               on_ticket_as: Classification | None = None) -> tuple[EventState, str]:
        assert record.decision is not None
        for _ in range(MAX_CONFLICTS + 1):
            try:
                platform.apply(ticket, record.decision, checkpoint=lambda: self._still_ours(event))
                break
            except PlatformError as exc:
                if exc.conflict:
                    ticket = platform.fetch_ticket(event.ticket_id)
                    # Landed, then moved; or, still where an earlier routing of ours put it, taken on meanwhile.
                    if moved_by_people(record.decision, ticket, also_ours=also_ours) or (
                            ROUTED_TAG in ticket.tags and ticket.group_id in also_ours
                            and self._taken_on(record, ticket)):
                        return self._leave(record, event, "moved_by_people", ticket=ticket, on_ticket=on_ticket,
                                           on_ticket_as=on_ticket_as)
                    continue
                if exc.retryable or exc.status in (None, 404):
                    raise
                if fields_may_be_refused(exc, record.decision):
                    # The ticket fields may be what was refused (a field deleted, a drop-down option
                    # renamed): they are for reports, so route without them rather than not at all.
                    without = record.decision.model_copy(update={"fields": {}})
                    self.store.tickets.replace_decision(
                        record, without, error=f"{platform.name} refused the write ({exc}); sent again without "
                                               "ticket fields")
                    log.warning("write refused, trying again without ticket fields", extra={
                        "event_id": event.id, "ticket_id": event.ticket_id, "status": exc.status})
                    continue
                if record.decision.triage:
                    raise
                # The helpdesk refused this routing (a deleted group, say): hand the ticket to people.
                reason = f"{platform.name} refused the routing ({exc}); sent to triage instead"
                fallback = triage_instead(record.decision, self.router.mappings[event.platform], self.router.taxonomy,
                                          reason=reason)
                self.store.tickets.replace_decision(record, fallback, error=str(exc))
                log.warning("routing refused, falling back to triage", extra={
                    "event_id": event.id, "ticket_id": event.ticket_id, "status": exc.status})
        else:
            raise PlatformError("the ticket kept changing while we wrote to it (409)", retryable=True, status=409)
        triage = record.decision.triage
        self.store.tickets.finish(record, state=TicketState.TRIAGE if triage else TicketState.DONE, now=self.clock())
        return (EventState.TRIAGE, "triage") if triage else (EventState.DONE, "routed")


class WorkerPool:
    """Worker threads inside `serve` or `deskroute worker`."""

    def __init__(self, make_worker: Callable[[], Worker], *, threads: int, poll_seconds: float):
        self._make_worker = make_worker
        self.threads = threads
        self.poll_seconds = poll_seconds
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads."""
        for i in range(self.threads):
            worker = self._make_worker()
            thread = threading.Thread(target=worker.run, name=f"deskroute-worker-{i}", daemon=True,
                                      args=(self.stop_event, self.wake_event, self.poll_seconds))
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Tell idle workers there is new work."""
        self.wake_event.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the threads to finish their current event and stop."""
        self.stop_event.set()
        self.wake_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
