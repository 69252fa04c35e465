"""Scheduled jobs (APScheduler), run inside `deskroute serve` and `deskroute worker`.

Each job is a plain function that tests call directly. Only worker processes start a scheduler, so
a web server with several processes doesn't run every job several times.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from connector.feedback import retrain
from connector.services import Services
from connector.store import DEAD, Store
from platforms.base import PlatformError

log = logging.getLogger(__name__)


def report_queue_health(store: Store) -> dict[str, object]:
    """Log the queue's state; a warning while dead-lettered jobs wait for an admin."""
    health = store.queue_health(now=store.clock())
    counts = health["counts"]
    assert isinstance(counts, dict)
    fields = {f"jobs_{state}": n for state, n in counts.items()}
    fields["oldest_waiting_s"] = health["oldest_waiting_seconds"]
    if counts.get(DEAD):
        log.warning("dead-lettered jobs need attention", extra=fields)
    else:
        log.info("queue health", extra=fields)
    return health


def poll_reroutes(services: Services) -> int:
    """Look for re-routes a webhook missed, on the recently routed tickets checked least recently."""
    settings = services.settings
    now = services.clock()
    due = services.store.tickets_to_check(routed_after=now - settings.deskroute_reroute_window_hours * 3600,
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
            services.store.mark_checked(platform, ticket_id, now=now)  # deleted, say: don't ask again soon
        checked += 1
    if checked:
        log.info("re-route poll", extra={"checked": checked})
    return checked


def retrain_job(services: Services) -> None:
    """The scheduled retrain on the feedback dataset, behind the promotion gate."""
    report = retrain(services.store, services.taxonomy, services.settings, now=services.clock())
    log.info("scheduled retrain", extra={"promoted": report.promoted, "model_version": report.version,
                                         "candidate_f1": round(report.candidate_f1, 4), "reason": report.reason})


def purge_job(services: Services) -> dict[str, int]:
    """Forget ticket text older than the retention period."""
    days = services.settings.deskroute_retention_days
    purged = services.store.purge_text(services.clock() - days * 86_400)
    if any(purged.values()):
        log.info("ticket text purged", extra={"retention_days": days, **purged})
    return purged


def init_scheduler(services: Services) -> BackgroundScheduler:
    """A scheduler with Deskroute's jobs, not yet started."""
    settings = services.settings
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(report_queue_health, "interval", minutes=1, args=[services.store], id="queue_health")
    if settings.deskroute_reroute_poll_minutes > 0:
        scheduler.add_job(poll_reroutes, "interval", minutes=settings.deskroute_reroute_poll_minutes,
                          args=[services], id="poll_reroutes")
    if settings.deskroute_retrain_cron.strip():
        scheduler.add_job(retrain_job, CronTrigger.from_crontab(settings.deskroute_retrain_cron, timezone="UTC"),
                          args=[services], id="retrain")
    if settings.deskroute_retention_days > 0:
        scheduler.add_job(purge_job, CronTrigger(hour=4, minute=15, timezone="UTC"), args=[services], id="purge_text")
    return scheduler
