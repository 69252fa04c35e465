"""Scheduled jobs (APScheduler), run inside `deskroute serve` and `deskroute worker`.

Each job is a plain function that tests call directly. Only worker processes start a scheduler, and
of those only one acts at a time (Leadership): a PostgreSQL advisory lock, or on SQLite a lease row,
elects it. Every process tries every 15 s, and every job checks right before it runs. If the leader
dies, another takes over within a minute, so the re-route poll runs once and only one 03:00 retrain
promotes a model, however many workers are up (a retrain checks once more that it still leads before
it promotes). The SQLite lease compares wall clocks; on one machine they agree.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from connector.model_keeper import Lease, gated_retrain, record_retrain
from connector.models import EventState
from connector.services import Services
from connector.store import QueueHealth, RetrainRecord, Store
from platforms.base import PlatformError

log = logging.getLogger(__name__)


LEADER_LOCK = "scheduler"
ADVISORY_KEY = 0x6465736B5343  # "deskSC": the scheduler's advisory lock, the same number in every process
LEASE_SECONDS, RENEW_SECONDS = 45.0, 15.0


class Leadership:
    """Whether this process is the one that runs scheduled jobs.

    On PostgreSQL, a session advisory lock on a connection of its own: released by the server the moment
    the leader's process or connection dies, so a survivor takes over at its next try (every 15 s). On
    SQLite (one machine), a lease row in `locks` that the leader renews and that runs out 45 s after it dies.
    """

    def __init__(self, store: Store, *, lease_seconds: float = LEASE_SECONDS, clock: Callable[[], float] = time.time):
        self.store = store
        self.lease_seconds = lease_seconds
        self.clock = clock  # wall time: the lease is about real processes, whatever clock the app runs on
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = store.db.session_lock(ADVISORY_KEY) if store.dialect == "postgresql" else None
        self._leading = False
        self.running = 0  # jobs of ours under way

    def hold(self) -> bool:
        """Take or keep the leadership; True while this process leads."""
        if self._lock is not None:
            leading = self._lock.hold()
        else:
            now = self.clock()
            leading = self.store.auth.try_lock(LEADER_LOCK, self.owner, until=now + self.lease_seconds, now=now)
        if leading != self._leading:
            log.info("scheduler leadership " + ("taken" if leading else "lost"), extra={"owner": self.owner})
            self._leading = leading
        return leading

    def release(self) -> None:
        """Hand the leadership over at once (a clean shutdown)."""
        if self._lock is not None:
            self._lock.release()
        else:
            self.store.auth.unlock(LEADER_LOCK, self.owner)
        self._leading = False

    def only(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn`, run only while this process leads."""

        @wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not self.hold():
                return None
            self.running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.running -= 1

        return run


def report_queue_health(store: Store) -> QueueHealth:
    """Log the queue's state; a warning while dead-lettered events wait for an admin."""
    health = store.events.health(now=store.clock())
    fields: dict[str, object] = {f"events_{state}": n for state, n in health.counts.items()}
    fields["oldest_waiting_s"] = health.oldest_waiting_seconds
    if health.counts.get(EventState.DEAD):
        log.warning("dead-lettered events need attention", extra=fields)
    else:
        log.info("queue health", extra=fields)
    return health


def poll_reroutes(services: Services) -> int:
    """Look for re-routes a webhook missed, on the recently routed tickets checked least recently."""
    settings = services.settings
    now = services.clock()
    due = services.store.tickets.to_check(routed_after=now - settings.deskroute_reroute_window_hours * 3600,
                                          checked_before=now - settings.deskroute_reroute_poll_minutes * 60,
                                          limit=settings.deskroute_reroute_poll_batch)
    checked = 0
    for platform, ticket_id in due:
        if platform not in services.platforms:
            continue
        try:
            services.reconciler.reconcile(platform, ticket_id)
        except PlatformError as exc:
            log.warning("re-route poll failed", extra={"platform": platform, "ticket_id": ticket_id,
                                                       "error": str(exc)})
            if exc.retryable:
                break  # rate limited or down: the next run carries on
            services.store.tickets.mark_checked(platform, ticket_id, now=now)  # deleted, say: don't ask again soon
        checked += 1
    if checked:
        log.info("re-route poll", extra={"checked": checked})
    return checked


def retrain_job(services: Services, still_leading: Callable[[], bool] = lambda: True) -> None:
    """The scheduled retrain on the feedback dataset, behind the promotion gate; it promotes only if this
    process still leads once training is done (a training can outlast a lease), and the taxonomy it trained
    for is still the live one (an edit meanwhile has the model keeper train for the new one)."""
    services.reload_config(force=True)  # the categories as they are now, whoever edited them
    taxonomy = services.taxonomy
    lease = Lease.take(services.store, f"retrain-{uuid.uuid4().hex[:12]}")
    if lease is None:
        log.info("scheduled retrain skipped: a model is being trained")
        now = services.clock()
        record_retrain(services.store, RetrainRecord(now, now, "schedule", "skipped",
                                                     "another training was running (a model for edited categories, "
                                                     "or a retrain asked for by hand)"))
        return
    with lease:
        report = gated_retrain(services.store, taxonomy, services.settings, lease, services.live_categories,
                               now=services.clock(), trigger="schedule", may_promote=still_leading)
    log.info("scheduled retrain", extra={"promoted": report.promoted, "model_version": report.version,
                                         "candidate_f1": round(report.candidate_f1, 4), "reason": report.reason})


def purge_job(services: Services) -> dict[str, int]:
    """Forget ticket text older than the retention period; and, with suggestions off, every ticket kept for
    them, whatever its age (off means none kept, not only no new one)."""
    days = services.settings.deskroute_retention_days
    purged = (services.store.retention.purge_text(services.clock() - days * 86_400) if days > 0
              else {"tickets": 0, "history": 0, "unrouted": 0})
    if not services.keeps_unrouted:
        purged["unrouted"] += services.store.suggestions.forget()
    if any(purged.values()):
        log.info("ticket text purged", extra={"retention_days": days, **purged})
    return purged


def suggest_job(services: Services) -> int:
    """Cluster the tickets no category took into taxonomy suggestions; how many suggestions."""
    from connector.suggest import compute  # scikit-learn, as the retrain

    services.reload_config(force=True)  # a category added since maps its group: those tickets are no gap now
    return len(compute(services.store, services.taxonomy, services.mappings, services.settings,
                       now=services.clock()))


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab(expression: str) -> CronTrigger:
    """A crontab line, in UTC, its weekdays numbered as cron numbers them. APScheduler counts weekdays from
    0 = Monday, where cron has 0 (and 7) = Sunday, so `0 3 * * 0` would run on Mondays: the weekday field is
    spelled out as the days cron means (`1-5` -> mon,tue,wed,thu,fri). (Unlike cron, a line that restricts
    both the day of the month and the weekday runs when both match.) ValueError if it isn't a crontab line."""
    fields = expression.split()
    if len(fields) == 5 and fields[4] not in ("*", "?"):
        days = sorted({day for part in fields[4].split(",") for day in _cron_days(part)})
        fields[4] = ",".join(_WEEKDAYS[day] for day in days)
    return CronTrigger.from_crontab(" ".join(fields), timezone="UTC")


def _cron_days(part: str) -> set[int]:
    """One comma-separated part of cron's weekday field (`3`, `1-5`, `*/2`, `mon-fri`, `fri-sun`, `0-6/2`)
    as day numbers, 0 = Sunday."""
    def day(word: str) -> int:  # 0-7, Sunday being 0 and 7
        word = word.strip().lower()
        if word in _WEEKDAYS:
            return _WEEKDAYS.index(word)
        if word.isdigit() and int(word) <= 7:
            return int(word)
        raise ValueError(f"not a weekday: {word!r}")

    span, _, step = part.partition("/")
    if span == "*":
        first, last = 0, 6
    elif "-" in span:
        low, high = span.split("-", 1)
        first, last = day(low), day(high)
        if last == 0 and first > 0:
            last = 7  # fri-sun, 5-0: up to the Sunday that ends the week
    else:
        first = day(span)
        last = 7 if step else first
    if last < first:
        raise ValueError(f"backwards weekday range: {part!r}")
    return {d % 7 for d in range(first, last + 1, int(step) if step else 1)}


def _trigger(setting: str, line: str) -> CronTrigger | None:
    """The trigger of a cron setting; None when it is empty, or not a crontab line (then the job is off and
    the log and `deskroute doctor` say why: a typo must not stop the workers)."""
    if not line.strip():
        return None
    try:
        return crontab(line)
    except ValueError as exc:
        log.error("schedule setting is not a crontab line: its job is off", extra={"setting": setting,
                                                                                  "error": str(exc)})
        return None


def init_scheduler(services: Services, leadership: Leadership | None = None) -> BackgroundScheduler:
    """A scheduler with Deskroute's jobs, not yet started; each job runs only in the elected process.
    Stop it with stop_scheduler(), which hands the lease over."""
    settings = services.settings
    leader = leadership or Leadership(services.store)
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.deskroute_leadership = leader  # type: ignore[attr-defined]
    scheduler.add_job(leader.hold, "interval", seconds=RENEW_SECONDS, id="leadership")
    scheduler.add_job(leader.only(report_queue_health), "interval", minutes=1, args=[services.store],
                      id="queue_health")
    if settings.deskroute_reroute_poll_minutes > 0:
        scheduler.add_job(leader.only(poll_reroutes), "interval", minutes=settings.deskroute_reroute_poll_minutes,
                          args=[services], id="poll_reroutes")
    retrain_at = _trigger("DESKROUTE_RETRAIN_CRON", settings.deskroute_retrain_cron)
    if retrain_at is not None:
        scheduler.add_job(leader.only(retrain_job), retrain_at, args=[services, leader.hold], id="retrain")
    if settings.deskroute_retention_days > 0 or not services.keeps_unrouted:
        scheduler.add_job(leader.only(purge_job), CronTrigger(hour=4, minute=15, timezone="UTC"), args=[services],
                          id="purge_text")
    suggest_at = _trigger("DESKROUTE_SUGGEST_CRON", settings.deskroute_suggest_cron)
    if services.keeps_unrouted and suggest_at is not None:
        scheduler.add_job(leader.only(suggest_job), suggest_at, args=[services], id="suggest")
    return scheduler


def stop_scheduler(scheduler: BackgroundScheduler) -> None:
    """Stop the jobs and give up the leadership, so that another process takes over at once."""
    scheduler.shutdown(wait=False)
    leader = getattr(scheduler, "deskroute_leadership", None)
    if leader is not None and not leader.running:  # a job still running keeps the lease until it runs out
        leader.release()
