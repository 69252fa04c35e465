#!/usr/bin/env python3
"""Webhook intake: signed webhooks per second accepted and persisted, behind gunicorn.

Runs two servers side by side under the same gunicorn command as the Procfile (sync workers,
`--workers 4` by default) and the same load generator, and measures them in alternating rounds:
  baseline   a bare Flask handler that parses the JSON and inserts a row into SQLite (bench/ingest_baseline.py),
             or with `--database`, into PostgreSQL with psycopg (INSERT ... ON CONFLICT DO NOTHING, autocommit)
  deskroute  `connector:create_app()`: verify the HMAC, check the window, parse, de-duplicate, enqueue
For each it measures
  throughput   closed loop: `--concurrency` clients sending as fast as they can, a connection per
               request as Zendesk does (keep-alive connections with `--threads N` > 1, gthread workers)
  CPU          gunicorn's user+system CPU per accepted request, from /proc (steal time is not in it)
  latency      open loop at `--rate` requests/s, timed from each request's scheduled send time
               (so a stalled server can't hide its queueing), p50/p99/max
and prints the ratio of Deskroute's throughput to the baseline's (the median of the rounds'
ratios). Every request carries a new ticket id, so every accepted request is a row written; rows
are counted in each database afterwards. This machine is shared and noisy: alternating rounds and
medians keep a neighbour's burst from landing on one server only.

The databases are SQLite files in a temporary folder, or with `--database postgresql://...` two fresh
databases on that server (bench_ingest_deskroute_<random>, bench_ingest_baseline_<random>), dropped
afterwards unless `--keep`.

    python bench/ingest.py                      # 7 rounds of: 3 s closed loop, 3 s at 500 req/s
    python bench/ingest.py --rate 800 --rounds 5
    python bench/ingest.py --workers 2 --threads 4   # gthread workers with keep-alive
    python bench/ingest.py --database postgresql://postgres@127.0.0.1:5432/postgres --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_baseline import create_schema  # noqa: E402
from bench.pgdb import describe, fresh_database, is_postgres  # noqa: E402
from platforms.zendesk import signed_headers  # noqa: E402  (the production signer)

SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A gunicorn process serving one app."""

    def __init__(self, name: str, app: str, *, workdir: Path, env: dict[str, str], workers: int, threads: int):
        self.name = name
        self.port = free_port()
        self.log = (workdir / f"{name}.log").open("w")
        gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
        # threads == 1: gunicorn's default sync workers, as in the Procfile (one request per connection).
        worker = ["--worker-class", "sync"] if threads == 1 else \
            ["--worker-class", "gthread", "--threads", str(threads), "--keep-alive", "30"]
        self.keep_alive = threads > 1
        self.process = subprocess.Popen(
            [gunicorn, "--preload", "--workers", str(workers), *worker,  # as in the Procfile
             "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning", app],
            cwd=workdir, env={**os.environ, **env, "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}"},
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health")
                if conn.getresponse().status in (200, 404):
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"{name} did not start; see {self.log.name}")

    def workers(self) -> list[int]:
        """The gunicorn workers' process ids (Linux /proc)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def cpu_seconds(self) -> float:
        """User + system CPU of gunicorn and its workers so far (Linux /proc); steal time is not in it."""
        total = 0
        for pid in [self.process.pid, *self.workers()]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def worker_rss_mb(self) -> list[tuple[float, float]]:
        """Each gunicorn worker's resident memory (VmRSS, MB) and its proportional share (Pss, MB: pages shared
        with the preloading master and the other workers counted once across them), from /proc."""
        sizes = []
        for pid in self.workers():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
                pss = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
                sizes.append((rss / 1024, pss / 1024))
        return sizes

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


class Requests:
    """Signed trigger bodies, each for a new ticket id."""

    def __init__(self, start: int):
        self._ids = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> tuple[bytes, dict[str, str]]:
        with self._lock:
            ticket_id = next(self._ids)
        body = json.dumps({"ticket_id": str(ticket_id), "event": "ticket.created"}).encode()
        return body, signed_headers(SECRET, body)


def send(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> int:
    conn.request("POST", "/webhooks/zendesk", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


def _raw_request(body: bytes, headers: dict[str, str], keep_alive: bool) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if not keep_alive:
        head += "Connection: close\r\n"
    return (f"POST /webhooks/zendesk HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n{head}\r\n"
            .encode() + body)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


def throughput(port: int, requests: Requests, *, seconds: float, concurrency: int,
               keep_alive: bool) -> tuple[float, int, int]:
    """Closed loop; returns (accepted per second, accepted, errors)."""
    prepared = [_raw_request(*requests.next(), keep_alive) for _ in range(int(seconds * 4000))]
    cursor = itertools.count()
    accepted = errors = 0

    async def client(stop_at: float) -> None:
        nonlocal accepted, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop_at and (i := next(cursor)) < len(prepared):
            try:
                status = await _exchange(reader, writer, prepared[i])
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                status = 0
            accepted += status == 202
            errors += status != 202
            if not keep_alive or status == 0:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    async def run() -> float:
        started = time.monotonic()
        await asyncio.gather(*(client(started + seconds) for _ in range(concurrency)))
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    return accepted / elapsed, accepted, errors


def latency(port: int, requests: Requests, *, rate: float, seconds: float, connections: int,
            keep_alive: bool) -> dict[str, float]:
    """Open loop at a fixed rate; latency counts from each request's scheduled time.

    One asyncio thread drives every connection, so the generator's own scheduling jitter stays far
    below what is measured (threads fighting over the GIL would add their own milliseconds).
    """
    total = int(rate * seconds)
    # Sign everything before the clock starts so signing doesn't eat into the schedule.
    prepared = [_raw_request(*requests.next(), keep_alive) for _ in range(total)]
    latencies: list[float] = []
    errors = 0

    async def run() -> float:
        pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        slots = asyncio.Semaphore(connections)
        if keep_alive:
            for _ in range(connections):
                pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2

        async def one(i: int) -> None:
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            async with slots:
                try:
                    # Without keep-alive, a connection per request, opened on schedule (as Zendesk does).
                    reader, writer = await (pool.get() if keep_alive else
                                            asyncio.open_connection("127.0.0.1", port))
                    ok = await _exchange(reader, writer, prepared[i]) == 202
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    ok = False
                latencies.append((loop.time() - due) * 1000)
                errors += not ok
                if keep_alive and ok:
                    pool.put_nowait((reader, writer))
                    return
                writer.close()
                if keep_alive:
                    pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = loop.time() - start
        while not pool.empty():
            pool.get_nowait()[1].close()
        return elapsed

    elapsed = asyncio.run(run())
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": q[49], "p99_ms": q[98], "max_ms": max(latencies), "errors": errors,
            "achieved_rps": total / elapsed}


def rows(db: Path | str, table: str) -> int:
    if isinstance(db, str):  # a PostgreSQL URL
        import psycopg

        with psycopg.connect(db) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500, help="open-loop request rate (default 500/s)")
    parser.add_argument("--seconds", type=float, default=3, help="open-loop seconds per round (default 3)")
    parser.add_argument("--throughput-seconds", type=float, default=3, help="closed-loop seconds per round (default 3)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per server (default 7)")
    parser.add_argument("--verbose", action="store_true", help="print each round's figures")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop connections (default 16)")
    parser.add_argument("--connections", type=int, default=32, help="open-loop connections (default 32)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers for both servers (default 4)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per worker: 1 (default) runs gunicorn's sync workers as the Procfile does, "
                        "a connection per request; more runs gthread workers with keep-alive connections")
    parser.add_argument("--database", metavar="URL", default=None,
                        help="postgresql://user@host:port/db: both servers write to fresh databases made on that "
                        "server (default: SQLite files in a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL databases afterwards")
    args = parser.parse_args()
    if args.database and not is_postgres(args.database):
        parser.error("--database takes a postgresql:// URL (without it, both servers write to SQLite)")
    with contextlib.ExitStack() as stack:
        databases = None
        if args.database:
            databases = {name: stack.enter_context(fresh_database(args.database, f"bench_ingest_{name}",
                                                                  keep=args.keep))
                         for name in ("baseline", "deskroute")}
            create_schema(databases["baseline"])
        bench(args, databases)


def bench(args: argparse.Namespace, databases: dict[str, str] | None) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="deskroute-ingest-"))
    common = {"workers": args.workers, "threads": args.threads, "workdir": workdir}
    baseline_db: Path | str = databases["baseline"] if databases else workdir / "baseline.db"
    deskroute_db: Path | str = databases["deskroute"] if databases else workdir / "deskroute.db"
    apps = {
        "baseline": ("ingest_baseline:create_app()",
                     {"BASELINE_DATABASE_URL": baseline_db} if databases else {"BASELINE_DB": str(baseline_db)},
                     baseline_db),
        "deskroute": ("connector:create_app()", {
            "DATABASE_URL": deskroute_db if databases else f"sqlite:///{deskroute_db}", "ZENDESK_SUBDOMAIN": "bench",
            "ZENDESK_OAUTH_CLIENT_ID": "bench", "ZENDESK_OAUTH_CLIENT_SECRET": "unused",
            "ZENDESK_WEBHOOK_SECRET": SECRET,
            "DESKROUTE_MAPPINGS_DIR": str(ROOT / "mappings"), "DESKROUTE_SCHEDULER": "false",
        }, deskroute_db),
    }
    if databases:
        print(f"database: postgresql, {describe(databases['deskroute'])} and {describe(databases['baseline'])}")
    else:
        print("database: sqlite")
    # Both servers stay up; the measurements alternate between them, round by round, so that a noisy
    # neighbour on this shared machine hits both alike. The medians are reported.
    servers = {name: Server(name, app, env=env, **common) for name, (app, env, _) in apps.items()}
    generators = {name: Requests(start=10_000_000 * (i + 1)) for i, name in enumerate(servers)}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    try:
        for name, server in servers.items():  # warm up
            send(http.client.HTTPConnection("127.0.0.1", server.port), *generators[name].next())
        for _ in range(args.rounds):
            for name, server in servers.items():
                cpu_before = server.cpu_seconds()
                rps, accepted, errors = throughput(server.port, generators[name], seconds=args.throughput_seconds,
                                                   concurrency=args.concurrency, keep_alive=server.keep_alive)
                cpu_us = (server.cpu_seconds() - cpu_before) / max(accepted, 1) * 1e6
                lat = latency(server.port, generators[name], rate=args.rate, seconds=args.seconds,
                              connections=args.connections, keep_alive=server.keep_alive)
                rounds[name].append({"throughput_rps": rps, "throughput_errors": errors, "cpu_us_per_request": cpu_us,
                                     **lat})
                if args.verbose:
                    print(f"  round {len(rounds[name])} {name}: {rps:.0f}/s, {cpu_us:.0f} us CPU/request, "
                          f"p99 {lat['p99_ms']:.1f} ms", flush=True)
        rss = {name: server.worker_rss_mb() for name, server in servers.items()}  # after the load, still up
    finally:
        for server in servers.values():
            server.stop()
    results = {}
    for name, runs in rounds.items():
        results[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        results[name]["rows"] = rows(apps[name][2], "events")
        r = results[name]
        print(f"{name:>9}: {r['throughput_rps']:8.0f} accepted/s ({r['throughput_errors']:.0f} errors), "
              f"{r['cpu_us_per_request']:.0f} us server CPU each | "
              f"at {args.rate:.0f}/s: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms, "
              f"{r['errors']:.0f} errors | rows persisted {r['rows']:.0f}   (medians of {args.rounds} rounds)")
    ratios = [d["throughput_rps"] / b["throughput_rps"] for d, b in zip(rounds["deskroute"], rounds["baseline"],
                                                                          strict=True)]
    ratio = statistics.median(ratios)
    cpu_ratio = results["baseline"]["cpu_us_per_request"] / results["deskroute"]["cpu_us_per_request"]
    print(f"throughput ratio deskroute/baseline: {ratio:.2f} (target >= 0.60; per round: "
          f"{', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"requests per server CPU-second, deskroute/baseline: {cpu_ratio:.2f} (immune to steal time)")
    print(f"deskroute p99 at {args.rate:.0f}/s: {results['deskroute']['p99_ms']:.1f} ms (target < 25 ms)")
    for name, sizes in rss.items():
        print(f"{name:>9} per gunicorn worker, RSS / PSS: {', '.join(f'{r:.0f} / {p:.0f}' for r, p in sizes)} MB"
              + (" (target RSS < 60 MB: the Procfile on a 512 MB instance)" if name == "deskroute" else ""))
    print(json.dumps({"ratio": round(ratio, 3), "cpu_ratio": round(cpu_ratio, 3),
                      "worker_rss_pss_mb": {name: [[round(r, 1), round(p, 1)] for r, p in sizes]
                                            for name, sizes in rss.items()},
                      **{k: {m: round(v, 3) for m, v in r.items()}
                                                   for k, r in results.items()}}))
    shutil.rmtree(workdir, ignore_errors=True)

if __name__ == "__main__":
    main()
