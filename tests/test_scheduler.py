"""One scheduler acts across every process of an install: an advisory lock (PostgreSQL) or a lease (SQLite)
elects it, and another process takes over when it dies. Real processes on one database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.classify.local import LocalModel
from connector.scheduler import Leadership
from connector.services import Services
from connector.store import Store
from databases import database_url, postgres_url
from helpers import PROJECT, FakeClock

# Each process: the app's scheduler (init_scheduler), plus a probe job every 0.2 s that writes its pid,
# run through the same leadership as the real jobs, with a 2 s lease so that the test can watch a takeover.
PROCESS = """
import sys, time, os
from pathlib import Path

import pytest
from connector.scheduler import Leadership, init_scheduler
from connector.services import Services
from connector.settings import Settings
settings = Settings(_env_file=None, database_url=sys.argv[1], deskroute_mappings_dir=sys.argv[3])
services = Services(settings)
leadership = Leadership(services.store, lease_seconds=2.0)
scheduler = init_scheduler(services, leadership)
probe = Path(sys.argv[2])
def note() -> None:
    with probe.open("a") as out:
        out.write(f"{os.getpid()} {time.time()}\\n")
scheduler.add_job(leadership.only(note), "interval", seconds=0.2, id="probe")
scheduler.add_job(leadership.hold, "interval", seconds=0.5, id="fast-renewal")
scheduler.start()
time.sleep(120)
"""


def runs(probe: Path) -> list[tuple[int, float]]:
    if not probe.exists():
        return []
    return [(int(pid), float(at)) for pid, at in (line.split() for line in probe.read_text().splitlines())]


def test_three_processes_run_each_scheduled_job_once_and_a_survivor_takes_over(tmp_path: Path) -> None:
    database, probe = database_url(tmp_path, "shared.db"), tmp_path / "runs.txt"
    Store(database).migrate()
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    processes = [subprocess.Popen([sys.executable, "-c", PROCESS, database, str(probe), str(PROJECT / "mappings")],
                                  env=env, cwd=tmp_path) for _ in range(3)]
    try:
        deadline = time.monotonic() + 60
        while len(runs(probe)) < 15 and time.monotonic() < deadline:
            time.sleep(0.2)
        seen = runs(probe)
        assert len(seen) >= 15, "the probe never ran"
        leaders = {pid for pid, _ in seen}
        assert len(leaders) == 1, f"jobs ran in {len(leaders)} processes at once"
        times = [at for _, at in seen]
        assert all(b - a > 0.1 for a, b in zip(times, times[1:], strict=False))  # never two runs at one tick
        [leader] = leaders
        next(p for p in processes if p.pid == leader).send_signal(signal.SIGKILL)  # it dies, lease and all
        killed_at = time.time()
        while not {pid for pid, at in runs(probe) if at > killed_at} and time.monotonic() < deadline:
            time.sleep(0.2)
        after = {pid for pid, at in runs(probe) if at > killed_at}
        assert len(after) == 1 and leader not in after  # one survivor took over (here within the 2 s lease)
    finally:
        for process in processes:
            process.kill()
            process.wait(10)


def test_a_lease_elects_one_leader_and_expires_for_a_dead_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.migrate()
    clock = FakeClock()
    first, second = (Leadership(store, clock=clock) for _ in range(2))
    assert first.hold() and not second.hold() and first.hold()  # the leader renews; the other waits
    clock.advance(44)
    assert not second.hold()
    clock.advance(2)  # the leader died 46 s ago: within a minute, the other takes over
    assert second.hold() and not first.hold()
    second.release()  # a clean shutdown hands over at once
    assert first.hold()


def test_a_retrain_that_outlived_its_leadership_does_not_promote(services: Services,
                                                                  taxonomy_model: LocalModel) -> None:
    from connector.feedback import consider, taxonomy_dataset

    before = services.store.models.active_version()
    holdout = taxonomy_dataset(services.taxonomy)
    report = consider(services.store, taxonomy_model, holdout, source="nightly", may_promote=lambda: False)
    assert not report.promoted and "stopped leading the scheduler" in report.reason
    assert services.store.models.active_version() == before
    assert consider(services.store, taxonomy_model, holdout, source="nightly").promoted  # while leading, it does


def test_on_postgresql_the_leader_is_whoever_holds_the_advisory_lock_and_its_death_frees_it() -> None:
    store = Store(postgres_url())
    first, second = Leadership(store), Leadership(store)
    assert first.hold() and not second.hold()
    assert first.hold() and not second.hold()  # held, not re-taken: still exactly one leader
    first._lock._conn.close()  # type: ignore[union-attr]  # the leader's connection dies with its process
    deadline = time.monotonic() + 10
    while not second.hold() and time.monotonic() < deadline:  # the server ends that session a moment later
        time.sleep(0.05)
    assert second.hold() and not first.hold()
    second.release()  # a clean shutdown: the server frees the lock when it has ended that session
    deadline = time.monotonic() + 10
    while not first.hold() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.hold()
    first.release()


@pytest.mark.parametrize(("line", "weekday"), [("0 3 * * 0", 6), ("0 3 * * 7", 6), ("0 3 * * 1", 0),
                                               ("0 3 * * sun", 6), ("0 3 * * 1-5", 0), ("0 3 * * 0-4", 6),
                                               ("0 3 * * 0-6", 6), ("0 3 * * 5-7", 6), ("0 3 * * */2", 6),
                                               ("0 3 * * 2,4", 1), ("0 3 * * mon-sun", 6),
                                               ("0 3 * * fri-sun", 6), ("0 3 * * 1-5/2", 0)])
def test_cron_weekdays_count_as_crontab_counts_them(line: str, weekday: int) -> None:
    """0 and 7 are Sunday in crontab; APScheduler alone would read 0 as Monday."""
    from datetime import UTC, datetime

    from connector.scheduler import crontab

    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    fire = crontab(line).get_next_fire_time(None, saturday)
    assert fire is not None and fire.weekday() == weekday and fire.hour == 3


def test_a_cron_setting_that_is_not_a_crontab_line_turns_its_job_off_not_the_worker(
        make_services: Callable[..., Services], caplog: pytest.LogCaptureFixture) -> None:
    from connector.scheduler import init_scheduler

    services = make_services(deskroute_retrain_cron="0 3 * * fri-mon")  # backwards
    jobs = {job.id for job in init_scheduler(services).get_jobs()}
    assert "retrain" not in jobs and "queue_health" in jobs
    assert any(r.getMessage().startswith("schedule setting is not a crontab line") for r in caplog.records)
