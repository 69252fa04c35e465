"""Web and worker processes writing to one database at once (SQLite: WAL and busy timeouts), no lost event."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from connector.models import TicketEvent
from connector.queue import Queue
from connector.store import Store
from databases import database_url

N = 400


def produce(path: str, start: int, count: int) -> None:
    """The web process: enqueue events (each its own write transaction), some of them twice."""
    queue = Queue(Store(path))
    for i in range(start, start + count):
        for _ in range(1 + (i % 10 == 0)):  # every tenth event is delivered twice
            queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id=str(i),
                                      dedup_key=f"ticket.created:{i}"))


def consume(path: str, expected: int, results: multiprocessing.Queue) -> None:
    """The worker process: claim and complete until it has finished `expected` jobs, or gives up."""
    queue = Queue(Store(path))
    done, idle = 0, 0
    while done < expected and idle < 20_000:
        job = queue.claim(owner="worker")
        if job is None:
            idle += 1
            continue
        queue.complete(job, state="done", outcome="routed")
        done += 1
    results.put(done)


def test_two_processes_write_at_once_without_losing_anything(tmp_path: Path) -> None:
    path = database_url(tmp_path)
    Store(path).migrate()  # once, before the race, as `deskroute serve` does at start
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each, like gunicorn + worker
    results = context.Queue()
    producers = [context.Process(target=produce, args=(path, 1 + k * N // 2, N // 2)) for k in range(2)]
    consumer = context.Process(target=consume, args=(path, N, results))
    for process in (consumer, *producers):
        process.start()
    for process in producers:
        process.join(120)
        assert process.exitcode == 0, "a web process failed (database is locked?)"
    consumer.join(180)
    assert consumer.exitcode == 0, "the worker process failed (database is locked?)"
    assert results.get(timeout=5) == N
    store = Store(path)
    counts = {r["state"]: r["n"] for r in store.db.execute("SELECT state, count(*) AS n FROM events GROUP BY state")}
    assert counts == {"done": N}  # every event once: duplicates de-duplicated, none lost
    if store.dialect == "sqlite":
        assert store.db.execute("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
