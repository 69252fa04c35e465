"""Scheduled jobs (APScheduler), run inside `deskroute serve` and `deskroute worker`.

Each job is a plain function that tests call directly. Only worker processes start a scheduler, so
a web server with several processes doesn't run every job several times.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler

from connector.services import Services
from connector.store import DEAD, Store

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


def init_scheduler(services: Services) -> BackgroundScheduler:
    """A scheduler with Deskroute's jobs, not yet started."""
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(report_queue_health, "interval", minutes=1, args=[services.store], id="queue_health")
    return scheduler
