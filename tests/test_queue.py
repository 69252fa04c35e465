"""The durable queue: idempotent enqueue, leases, retries with backoff, dead letters, migrations."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connector.models import EventState, TicketEvent
from connector.queue import Queue, RetryPolicy
from connector.store import Store, migrate
from databases import database_url
from helpers import FakeClock

DEAD, DONE = EventState.DEAD, EventState.DONE


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Store:
    s = Store(database_url(tmp_path, "q.db"), clock=clock)
    s.migrate()
    return s


@pytest.fixture
def queue(store: Store, clock: FakeClock) -> Queue:
    return Queue(store, lease_seconds=60, policy=RetryPolicy(max_attempts=3, base_seconds=2, max_seconds=100))


def event(ticket_id: str = "1", key: str | None = None) -> TicketEvent:
    return TicketEvent(platform="zendesk", kind="ticket.created", ticket_id=ticket_id,
                       dedup_key=key or f"ticket.created:{ticket_id}")


def test_migrations_are_applied_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db")
    assert store.migrate() == ["0001", "0002", "0003", "0004", "0005", "0006"]
    assert store.migrate() == []
    assert migrate.current(store.db) == migrate.head() == migrate.HEAD == "0006"  # HEAD says what the files say


def _migrate(path: str) -> list[str]:
    return Store(path).migrate()


def test_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    import multiprocessing

    path = str(tmp_path / "race.db")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_migrate, [path] * 4)
    assert sorted(len(r) for r in results) == [0, 0, 0, int(migrate.HEAD)]  # one process applies them all
    assert migrate.current(Store(path).db) == migrate.head()


def test_a_pre_alembic_sqlite_file_is_brought_up_to_date_and_keeps_its_rows(tmp_path: Path) -> None:
    """An install made before Alembic (sqlite-utils migrations m001..m006) upgrades in place."""
    import sqlite3

    from connector.store import legacy

    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE _migrations (number INTEGER PRIMARY KEY, name TEXT, applied_at FLOAT)")
    assert legacy.upgrade(str(path))  # what the old release left behind, m001..m006
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO events (platform, kind, ticket_id, dedup_key, received_at, state, due_at)"
                     " VALUES ('zendesk', 'ticket.created', '7', 'k7', 1, 'done', 1)")
    store = Store(path)
    assert store.migrate() == ["0002", "0003", "0004", "0005", "0006"]  # stamped at 0001, then upgraded
    assert store.events.get(1)["ticket_id"] == "7"
    assert store.configs.latest() is None  # 0002's table is there


def test_enqueue_is_idempotent(queue: Queue) -> None:
    first, created = queue.enqueue(event())
    again, created_again = queue.enqueue(event())
    assert created and not created_again and first == again
    other, created_other = queue.enqueue(event("2"))
    assert created_other and other != first


def test_claim_leases_a_job_to_one_worker(queue: Queue) -> None:
    queue.enqueue(event())
    job = queue.claim("a")
    assert job is not None and job.attempts == 1
    assert queue.claim("b") is None  # leased to a


def test_expired_lease_goes_to_the_next_claim_and_fences_the_old_owner(queue: Queue, clock: FakeClock) -> None:
    queue.enqueue(event())
    stale = queue.claim("a")
    assert stale is not None
    clock.advance(61)
    fresh = queue.claim("b")
    assert fresh is not None and fresh.id == stale.id and fresh.attempts == 2
    assert not queue.complete(stale, state=DONE, outcome="routed")   # a's lease is gone
    assert queue.complete(fresh, state=DONE, outcome="routed")
    assert queue.store.events.get(fresh.id)["state"] == DONE


def test_heartbeat_keeps_the_lease(queue: Queue, clock: FakeClock) -> None:
    queue.enqueue(event())
    job = queue.claim("a")
    assert job is not None
    clock.advance(50)
    assert queue.heartbeat(job)
    clock.advance(50)
    assert queue.claim("b") is None


def test_retry_backs_off_then_dead_letters(queue: Queue, clock: FakeClock) -> None:
    queue.enqueue(event())
    delays = []
    for attempt in range(1, 4):
        job = queue.claim("a")
        assert job is not None and job.attempts == attempt
        state = queue.retry(job, error="503 ServiceUnavailable")
        row = queue.store.events.get(job.id)
        if attempt < 3:
            assert state == "pending" and row["state"] == "pending"
            delays.append(row["due_at"] - clock())
            assert queue.claim("a") is None  # not due yet
            clock.advance(delays[-1])
        else:
            assert state == DEAD and row["state"] == DEAD and row["last_error"] == "503 ServiceUnavailable"
    assert 1.0 <= delays[0] <= 2.0 and 2.0 <= delays[1] <= 4.0  # 2 s then 4 s, with jitter


def test_retry_honours_retry_after(queue: Queue, clock: FakeClock) -> None:
    queue.enqueue(event())
    job = queue.claim("a")
    assert job is not None
    queue.retry(job, error="429", retry_after=45)
    assert queue.store.events.get(job.id)["due_at"] - clock() >= 45


def test_events_are_claimed_oldest_first(queue: Queue, clock: FakeClock) -> None:
    ids = []
    for n in range(3):
        ids.append(queue.enqueue(event(str(n)))[0])
        clock.advance(1)
    claimed = [queue.claim("a").id for _ in ids]  # type: ignore[union-attr]
    assert claimed == ids


def test_background_checkpoints_keep_the_wal_small(tmp_path: Path) -> None:
    def wal_mb_after_writes(store: Store) -> float:
        for n in range(1500):
            store.events.insert(event(str(n)), now=0.0)
            if n % 100 == 0:
                # Let a checkpointer, if any, get a turn: several, as a loaded machine (the suite on two
                # processes) may give the thread none in a 20 ms pause (seen once: 9.5 MB against 21).
                time.sleep(0.1)
        return (tmp_path / f"{Path(store.path).name}-wal").stat().st_size / 1e6

    without = Store(tmp_path / "plain.db")
    without.migrate()
    with_thread = Store(tmp_path / "checkpointed.db")
    with_thread.migrate()
    with_thread.start_checkpointer(interval=0.01)
    # Requests never checkpoint below AUTOCHECKPOINT_PAGES, so the WAL only stays small with the thread.
    assert wal_mb_after_writes(without) > 3 * wal_mb_after_writes(with_thread)


def test_a_job_that_kills_its_worker_dies_once_its_attempts_are_spent(queue: Queue, store: Store,
                                                                       clock: FakeClock) -> None:
    event_id, _ = queue.enqueue(event("7"))
    store.tickets.claim(platform="zendesk", ticket_id="7", event_id=event_id, now=clock())
    for _ in range(3):  # each claim's worker is SIGKILLed (or OOM-killed) mid-job: no retry, no finish
        job = queue.claim("doomed")
        assert job is not None and job.id == event_id
        clock.advance(61)  # its lease expires
    assert queue.claim("next") is None  # not handed out a fourth time
    row = store.events.get(event_id)
    assert row["state"] == DEAD and row["attempts"] == 3 and row["outcome"] == "worker_died"
    assert row["last_error"] == "worker died or lost its lease on attempt 3, the last allowed"
    assert store.tickets.get("zendesk", "7").state == DEAD  # type: ignore[union-attr]


def test_a_revision_that_fails_halfway_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """A migration killed (or failing) mid-revision must not leave half its DDL behind on SQLite either."""
    import shutil

    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.SCRIPTS, scripts)
    (scripts / "versions" / "0099_broken.py").write_text(
        f'import sqlalchemy as sa\nfrom alembic import op\n\nrevision = "0099"\ndown_revision = "{migrate.HEAD}"\n'
        'branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n'
        '    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))\n'
        '    raise RuntimeError("killed mid-revision")\n')
    store = Store(tmp_path / "m.db")
    store.migrate()
    head = migrate.HEAD
    monkeypatch.setattr(migrate, "SCRIPTS", scripts)
    monkeypatch.setattr(migrate, "HEAD", "0099")
    with pytest.raises(RuntimeError, match="killed mid-revision"):
        store.migrate()
    assert migrate.current(store.db) == head
    assert not store.db.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'")
