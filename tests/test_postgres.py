"""PostgreSQL as the shared store: claims that skip each other's locks, workers woken by NOTIFY, moving an
install from SQLite, and a server that is down. Skipped, with the reason, where no server runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.models import TicketEvent
from connector.queue import Queue
from connector.store import Store, StoreUnavailable
from connector.store.events import CHANNEL
from databases import postgres_url
from helpers import FakeClock


def event(n: int) -> TicketEvent:
    return TicketEvent(platform="zendesk", kind="ticket.created", ticket_id=str(n), dedup_key=f"ticket.created:{n}")


def test_claims_skip_rows_another_worker_has_locked() -> None:
    """A worker whose claim is mid-transaction doesn't make the others wait, nor hand them its row."""
    store = Store(postgres_url())
    queue = Queue(store)
    for n in (1, 2):
        queue.enqueue(event(n))
    with store.db.transaction() as tx:  # another worker's claim, holding the oldest row's lock
        tx.execute("SELECT id FROM events ORDER BY id LIMIT 1 FOR UPDATE")
        started = time.monotonic()
        job = queue.claim("b")
        waited = time.monotonic() - started
    assert job is not None and job.ticket_id == "2"  # skipped the locked row rather than taking it too
    assert waited < 2  # and didn't wait for its lock


def test_many_workers_claiming_at_once_never_share_a_job() -> None:
    store = Store(postgres_url())
    queue = Queue(store)
    for n in range(200):
        queue.enqueue(event(n))
    claimed: list[int] = []
    lock = threading.Lock()

    def work(owner: str) -> None:
        while (job := queue.claim(owner)) is not None:
            with lock:
                claimed.append(job.id)
            queue.complete(job, state="done", outcome="routed")

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(claimed) == 200 and len(set(claimed)) == 200


def test_an_insert_anywhere_wakes_listening_workers() -> None:
    url = postgres_url()
    listener, writer = Store(url), Store(url)
    woken, stop = threading.Event(), threading.Event()
    connected = threading.Event()

    def wake() -> None:
        (woken if connected.is_set() else connected).set()

    listener.db.listen(CHANNEL, wake, stop)
    try:
        assert connected.wait(10)  # the first wake comes on connecting
        assert not woken.wait(0.5)
        Queue(writer).enqueue(event(1))  # another process's webhook
        assert woken.wait(5)
    finally:
        stop.set()


def test_a_server_that_is_down_is_store_unavailable_not_a_crash() -> None:
    store = Store("postgresql://postgres@127.0.0.1:9/nowhere")  # nothing listens on port 9
    with pytest.raises(StoreUnavailable):
        store.events.insert(event(1), now=0.0)


def test_db_copy_moves_an_install_from_sqlite_and_checks_the_counts(tmp_path: Path, monkeypatch: Any) -> None:
    clock = FakeClock()
    source_url = f"sqlite:///{tmp_path / 'old.db'}"
    source = Store(source_url, clock=clock)
    source.migrate()
    queue = Queue(source)
    for n in range(3):
        queue.enqueue(event(n))
    job = queue.claim("w")
    assert job is not None
    source.tickets.claim(platform="zendesk", ticket_id=job.ticket_id, event_id=job.id, now=clock())
    source.models.save(blob=b"\x00model\xff", labels=["billing"], n_examples=1, metrics={}, source="t",
                       sha256="x", activate=True, now=clock())
    source.configs.save({"taxonomy.yaml": "categories: {}\n"}, based_on=None, author="ada", summary="s",
                        diffs={"taxonomy.yaml": "+"}, now=clock())
    target_url = postgres_url(migrated=False)
    result = CliRunner().invoke(main, ["db", "copy", "--from", source_url, "--to", target_url])
    assert result.exit_code == 0, result.output
    assert "events                   3 -> 3" in result.output and "MISMATCH" not in result.output
    target = Store(target_url)
    assert target.models.blob(target.models.active_version() or 0) == b"\x00model\xff"
    assert target.configs.latest().files == {"taxonomy.yaml": "categories: {}\n"}  # type: ignore[union-attr]
    assert target.tickets.get("zendesk", job.ticket_id) is not None
    new_id, created = Queue(target).enqueue(event(99))  # the sequences moved past the copied ids
    assert created and new_id == 4
    again = CliRunner().invoke(main, ["db", "copy", "--from", source_url, "--to", target_url])
    assert again.exit_code != 0 and "already holds data" in again.output


def test_db_upgrade_migrates_and_says_where(monkeypatch: Any) -> None:
    url = postgres_url(migrated=False)
    monkeypatch.setenv("DATABASE_URL", url)
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "applied 0001, 0002, 0003, 0004, 0005, 0006" in result.output and "at revision 0006" in result.output
    assert "postgres@127.0.0.1" in result.output


def test_db_copy_from_postgresql_back_to_a_sqlite_file(tmp_path: Path) -> None:
    source_url = postgres_url()
    queue = Queue(Store(source_url))
    for n in range(1200):  # more than one batch
        queue.enqueue(event(n))
    target_url = f"sqlite:///{tmp_path / 'backup.db'}"
    result = CliRunner().invoke(main, ["db", "copy", "--from", source_url, "--to", target_url])
    assert result.exit_code == 0, result.output
    assert Store(target_url).events.get(1200)["ticket_id"] == "1199"


def test_after_the_server_drops_every_connection_one_statement_fails_softly_and_the_next_works() -> None:
    """A restart or failover: pooled connections are dead. No pre-ping (it costs a round trip per
    statement), so the first statement finds out, as a StoreUnavailable (503, retried), not a 500."""
    import psycopg

    from databases import SERVER

    url = postgres_url()
    store = Store(url)
    queue = Queue(store)
    queue.enqueue(event(1))
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                      " AND pid <> pg_backend_pid()", (name,))
    with pytest.raises(StoreUnavailable):
        queue.enqueue(event(2))
    assert queue.enqueue(event(2))[1]  # the pool was emptied and reconnects


def test_processes_activating_models_at_once_leave_exactly_one_active() -> None:
    """After a configuration edit every worker process may retrain and activate at the same moment."""
    url = postgres_url()
    stores = [Store(url) for _ in range(6)]
    start = threading.Barrier(len(stores))

    def activate(store: Store) -> None:
        start.wait()
        store.models.save(blob=b"m", labels=["billing"], n_examples=1, metrics={}, source="t", sha256="x",
                          activate=True, now=0.0)

    threads = [threading.Thread(target=activate, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(info.active for info in stores[0].models.all()) == 1


def test_where_the_data_is_never_shows_a_password() -> None:
    for url in ("postgresql://ada:s3cret-pw@db.example:5432/deskroute",
                "postgresql://ada@db.example/deskroute?password=s3cret-pw&sslmode=require"):
        shown = Store(url).describe()
        assert "s3cret-pw" not in shown and "db.example" in shown


def test_a_host_whose_clock_runs_fast_does_not_take_leases_early() -> None:
    """Leases are compared across machines: a worker on a host 5 minutes fast must not see another worker's
    2-minute lease as run out and route its ticket a second time. Every process reads the database's time."""
    url = postgres_url()
    honest, fast = Store(url), Store(url, host_time=lambda: time.time() + 300)  # a host 5 minutes fast
    assert abs(fast.db.wall() - time.time()) < 5  # the server's time, not the host's
    Queue(honest).enqueue(event(1))
    job = Queue(honest, lease_seconds=120).claim("honest worker")
    assert job is not None
    assert Queue(fast, lease_seconds=120).claim("fast worker") is None  # the lease has 2 minutes to run


def test_the_database_clock_goes_on_from_its_last_reading_and_reads_again_when_the_host_clock_jumps() -> None:
    """Between readings the server's time is carried forward on the monotonic clock. A host clock that parts
    from it (an NTP step, a suspend) has the server read again at once; a server that is away keeps the last
    reading, and until a first reading the host's time is all there is."""
    from connector.store.clock import DatabaseClock

    readings: list[Any] = [StoreUnavailable("down"), 1000.0, 2000.0, StoreUnavailable("down"), 3000.0]
    mono, host = [0.0], [400.0]

    def server() -> float:
        reading = readings.pop(0)
        if isinstance(reading, Exception):
            raise reading
        return reading

    clock = DatabaseClock(server, host_time=lambda: host[0], monotonic=lambda: mono[0])
    assert clock() == 400.0  # never read yet: the host's clock
    assert clock() == 1000.0 and clock.offset == 600.0  # read at the next call, not 30 s on
    host[0], mono[0] = 410.0, 10.0  # 10 s pass on both clocks
    assert clock() == 1010.0 and readings[0] == 2000.0  # carried forward, no reading
    host[0] = 9000.0  # the host's clock is stepped
    assert clock() == 2000.0  # read again at once
    mono[0] = 610.0  # due for another reading: the server is away
    host[0] = 9600.0
    assert clock() == 2600.0  # the last reading, carried forward
    mono[0], host[0] = 645.0, 9635.0  # 35 s later it answers
    assert clock() == 3000.0 and not readings
