"""Worker scaling on PostgreSQL: tickets per second with 1, 2 and 4 `deskroute worker` processes.

    python bench/scaling.py [--database postgresql://postgres@127.0.0.1:5432/postgres]
                            [--tickets 300] [--processes 1 2 4] [--threads 1] [--latency 0.05] [--warmup 3]

For each process count, on a fresh database `bench_scaling_<random>` (dropped afterwards unless
`--keep`) and a fresh loopback Zendesk fake that takes `--latency` seconds (50 ms) to answer every
call (a threaded server: concurrent calls overlap; each ticket is a GET and a PUT):
  1. `--tickets` ticket.created events are stored directly with the store (intake isn't measured here),
     held back (due far in the future);
  2. the worker processes start (each with DESKROUTE_WORKER_THREADS=`--threads`, 1 by default, so that a
     process is the unit of scaling) and train or load the model; once every one says it is running,
  3. `--warmup` tickets per process (3) are released first and run to the end, untimed: a worker's first
     job loads the model and the Claude tier and gets an OAuth token (about a second, on this machine),
     which is startup, not throughput (`--warmup 0` times it too);
  4. the events are released at once (due now, plus a NOTIFY), and the clock runs from there to the
     last event's finished_at.
Then it checks, from the fake's own record, that every ticket was written back exactly once (one
update, one private note) and none was lost, and prints tickets/s and the ratio to the first
process count (targets: >= 1.8x at 2 processes, >= 3x at 4).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pgdb import describe, fresh_database, is_postgres  # noqa: E402
from bench.soak import environment, start_worker  # noqa: E402
from connector.demo import SAMPLE_TICKETS, mapped_groups  # noqa: E402
from connector.models import TicketEvent  # noqa: E402
from connector.store import Store  # noqa: E402
from connector.store.events import CHANNEL  # noqa: E402
from platforms.fakes.zendesk import FakeZendesk  # noqa: E402

HOLD = 4_000_000_000.0  # due_at far in the future: stored but not yet claimable
TARGETS = {2: 1.8, 4: 3.0}


class SlowZendesk(FakeZendesk):
    """The Zendesk fake, answering every call (OAuth included) after a fixed delay.

    The delay is slept before the fake takes its lock, on the request's own thread (the server is
    threaded), so concurrent calls wait side by side as they would on a real helpdesk.
    """

    def __init__(self, *, latency: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.latency = latency

    def _handle(self, request: Any) -> Any:
        time.sleep(self.latency)
        return super()._handle(request)


def wait_until_running(processes: list[subprocess.Popen], logs: list[Path], timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise SystemExit(f"a worker exited with {process.returncode}; see {log}")
        if all(log.exists() and b"Deskroute worker running" in log.read_bytes() for log in logs):
            return
        time.sleep(0.2)
    raise SystemExit(f"workers not running after {timeout:.0f} s; see {logs[0].parent}")


def release(store: Store, first: int, last: int, *, timeout: float) -> float:
    """Make tickets first..last due now, wake the workers, and wait until nothing is pending or running."""
    released = time.time()
    these = {"now": released, "first": first, "last": last}
    in_range = "CAST(ticket_id AS BIGINT) BETWEEN :first AND :last"
    store.db.execute(f"UPDATE events SET due_at = :now WHERE {in_range}", these)
    store.db.notify(CHANNEL)  # an UPDATE: the insert trigger doesn't fire
    while time.time() < released + timeout:
        waiting = store.db.execute(f"SELECT count(*) AS n FROM events WHERE {in_range}"
                                   " AND state IN ('pending', 'running')", these)
        if not waiting[0]["n"]:
            break
        time.sleep(0.1)
    return released


def run(args: argparse.Namespace, processes: int, workdir: Path) -> dict[str, Any]:
    groups = mapped_groups(ROOT / "mappings", "zendesk")
    fake = SlowZendesk(latency=args.latency, groups=groups, refuse_basic=True)
    warmup = args.warmup * processes
    ids = list(range(200_001, 200_001 + warmup + args.tickets))
    for n, ticket_id in enumerate(ids):
        subject, description = SAMPLE_TICKETS[n % len(SAMPLE_TICKETS)]
        fake.add_ticket(ticket_id, subject=subject, description=f"{description} (#{n})", tags=["web_form"])
    netloc = fake.start()
    workers: list[subprocess.Popen] = []
    with fresh_database(args.database, "bench_scaling", keep=args.keep) as database_url:
        store = Store(database_url)
        try:
            store.migrate()
            for ticket_id in ids:
                store.events.insert(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id=str(ticket_id),
                                                dedup_key=f"ticket.created:{ticket_id}"), now=time.time())
            store.db.execute("UPDATE events SET due_at = :hold", {"hold": HOLD})
            env = {**environment(database_url, "zendesk", netloc),
                   "DESKROUTE_WORKER_THREADS": str(args.threads), "DESKROUTE_POLL_SECONDS": str(args.poll_seconds)}
            logs = [workdir / f"{processes}p-worker-{i + 1}.log" for i in range(processes)]
            workers = [start_worker(env, log) for log in logs]
            wait_until_running(workers, logs)
            if warmup:
                release(store, ids[0], ids[warmup - 1], timeout=args.timeout)
            calls_before = len(fake.requests)
            released = release(store, ids[warmup], ids[-1], timeout=args.timeout)
            finished = store.db.execute("SELECT max(finished_at) AS t FROM events")[0]["t"] or time.time()
            states = {r["state"]: r["n"] for r in
                      store.db.execute("SELECT state, count(*) AS n FROM events GROUP BY state")}
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            store.close()
            fake.stop()
    seconds = finished - released
    ids = ids[warmup:]
    writes = {t: len(fake.applied.get(t, [])) for t in ids}
    notes = {t: len(fake.private_notes(t)) for t in ids}
    return {
        "processes": processes, "seconds": seconds, "tickets_per_s": len(ids) / seconds,
        "once": sum(1 for t in ids if writes[t] == 1 and notes[t] == 1),
        "duplicates": sum(max(0, w - 1) for w in writes.values()) + sum(max(0, n - 1) for n in notes.values()),
        "lost": sum(1 for t in ids if writes[t] == 0),
        "states": states, "calls": len(fake.requests) - calls_before,
        "database": describe(database_url),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", metavar="URL", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server to make the throwaway databases on (default: %(default)s)")
    parser.add_argument("--tickets", type=int, default=300, help="tickets per run (default 300)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4],
                        help="worker process counts, the first the reference (default 1 2 4)")
    parser.add_argument("--threads", type=int, default=1, help="DESKROUTE_WORKER_THREADS per process (default 1)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake takes per call (default 0.05)")
    parser.add_argument("--poll-seconds", type=float, default=0.25,
                        help="DESKROUTE_POLL_SECONDS (default 0.25, Deskroute's default)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed tickets per process run first, so that first-job costs aren't timed (default 3)")
    parser.add_argument("--timeout", type=float, default=600, help="longest a run may take to drain (default 600 s)")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()
    if not is_postgres(args.database):
        parser.error("--database takes a postgresql:// URL")

    workdir = Path(tempfile.mkdtemp(prefix="deskroute-scaling-"))
    results = []
    for processes in args.processes:
        result = run(args, processes, workdir)
        results.append(result)
        print(f"  {processes} process(es): {result['tickets_per_s']:.1f} tickets/s, states {result['states']},"
              f" {result['calls']} helpdesk calls", file=sys.stderr, flush=True)

    reference = results[0]["tickets_per_s"]
    print(f"database: postgresql ({describe(args.database)}), fake Zendesk latency {args.latency * 1000:.0f} ms"
          f" per call, {args.threads} thread(s) per worker process, {args.tickets} tickets per run"
          f" (after {args.warmup} untimed per process)")
    print(f"{'processes':>9} {'seconds':>8} {'tickets/s':>10} {'ratio':>6} {'target':>7}"
          f" {'written once':>13} {'duplicates':>11} {'lost':>5}")
    ok = True
    for r in results:
        ratio = r["tickets_per_s"] / reference
        target = TARGETS.get(r["processes"]) if results[0]["processes"] == 1 else None
        ok &= r["once"] == args.tickets and r["duplicates"] == 0 and r["lost"] == 0
        ok &= target is None or ratio >= target
        print(f"{r['processes']:>9} {r['seconds']:>8.1f} {r['tickets_per_s']:>10.1f} {ratio:>5.2f}x"
              f" {f'>={target}x' if target else '':>7} {r['once']:>13} {r['duplicates']:>11} {r['lost']:>5}")
    print("ratios vs 1 process: " + ", ".join(f"{r['processes']}: {r['tickets_per_s'] / reference:.2f}x"
                                                for r in results))
    print(f"logs: {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
