"""Soak: thousands of signed webhooks, a flaky helpdesk, and a worker killed with SIGKILL twice.

    python bench/soak.py [--platform zendesk|freshdesk] [--tickets 5000] [--duplicates 0.1]
                         [--fail-429 0.05] [--fail-503 0.05] [--kills 2]
                         [--database postgresql://user@host:5432/db [--keep]] [--web-workers N] [--workers N]

Runs the Procfile's processes for real: gunicorn (`connector:create_app()`, `--web-workers`) for the
web, and `--workers` `deskroute worker` processes (SIGKILLed mid-run and restarted, `--kills` times in
all, round-robin), against a loopback fake of the helpdesk (Zendesk unless told otherwise) that answers
a share of calls with 429 (Retry-After: 1) or 503. Then it waits for the queue to drain and reports,
from the fake's own record of writes and from the database: tickets accepted, written back exactly
once, in triage, dead, lost (must be 0), duplicate writes and duplicate notes (must be 0), throughput,
and end-to-end latency (webhook received to final state).

The database is a SQLite file in the run's temporary folder (one worker process by default), or, with
`--database postgresql://...`, a fresh database `bench_soak_<random>` made on that server (two worker
processes by default) and dropped afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import free_port  # noqa: E402
from bench.pgdb import describe, fresh_database, is_postgres  # noqa: E402
from connector.demo import SAMPLE_TICKETS, mapped_groups  # noqa: E402
from connector.store import Store  # noqa: E402
from platforms.fakes.base import FakeHelpdesk  # noqa: E402
from platforms.fakes.freshdesk import FakeFreshdesk  # noqa: E402
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, FakeZendesk  # noqa: E402
from platforms.freshdesk import TOKEN_HEADER_NAME  # noqa: E402
from platforms.zendesk import signed_headers  # noqa: E402

SECRET = "soak-webhook-secret"


def environment(database_url: str, platform: str, netloc: str) -> dict[str, str]:
    """The processes' settings: only the soaked helpdesk is configured, pointed at its fake."""
    helpdesk = ({"ZENDESK_SUBDOMAIN": "soak", "ZENDESK_OAUTH_CLIENT_ID": OAUTH_CLIENT_ID,
                 "ZENDESK_OAUTH_CLIENT_SECRET": OAUTH_CLIENT_SECRET, "ZENDESK_WEBHOOK_SECRET": SECRET,
                 "ZENPY_FORCE_NETLOC": netloc, "ZENPY_FORCE_SCHEME": "http"}
                if platform == "zendesk" else
                {"FRESHDESK_DOMAIN": "soak", "FRESHDESK_API_KEY": "soak-key", "FRESHDESK_WEBHOOK_SECRET": SECRET,
                 "FRESHDESK_BASE_URL": f"http://{netloc}"})
    return {**os.environ, "DATABASE_URL": database_url, **helpdesk,
            "ANTHROPIC_API_KEY": "", "DESKROUTE_MAPPINGS_DIR": str(ROOT / "mappings"), "DESKROUTE_SCHEDULER": "false",
            "DESKROUTE_WORKER_THREADS": "8", "DESKROUTE_POLL_SECONDS": "0.2",
            "DESKROUTE_LEASE_SECONDS": "30", "DESKROUTE_LOG_LEVEL": "WARNING",
            "DESKROUTE_LOG_FORMAT": "text", "DESKROUTE_EMBEDDINGS": "off"}


def fake_helpdesk(platform: str) -> FakeHelpdesk:
    groups = mapped_groups(ROOT / "mappings", platform)
    if platform == "zendesk":  # OAuth only, as every Zendesk from 30 April 2027; tokens renewed every minute
        return FakeZendesk(groups=groups, refuse_basic=True, token_seconds=60)
    return FakeFreshdesk(api_key="soak-key", groups=groups)


def webhook_headers(platform: str, body: bytes) -> dict[str, str]:
    """What the helpdesk would send: Zendesk signs each delivery, Freshdesk's rule carries the shared token."""
    if platform == "freshdesk":
        return {"Content-Type": "application/json", TOKEN_HEADER_NAME: SECRET}
    return signed_headers(SECRET, body)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "connector", "worker"], env=env, cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def counts(store: Store) -> dict[str, int]:
    return {r["state"]: r["n"] for r in store.db.execute("SELECT state, count(*) AS n FROM events GROUP BY state")}


def database_ready(store: Store) -> bool:
    """Migrated: the events table can be read."""
    try:
        store.db.execute("SELECT count(*) AS n FROM events")
    except Exception:  # not there yet (StoreUnavailable on SQLite, ProgrammingError on PostgreSQL)
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", choices=["zendesk", "freshdesk"], default="zendesk")
    parser.add_argument("--tickets", type=int, default=5000)
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--fail-429", type=float, default=0.05)
    parser.add_argument("--fail-503", type=float, default=0.05)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--database", metavar="URL", default=None,
                        help="postgresql://user@host:port/db: run on a fresh database made on that server "
                        "(default: a SQLite file in the run's temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database afterwards")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--workers", type=int, default=None,
                        help="`deskroute worker` processes (default 1 on SQLite, 2 on PostgreSQL)")
    args = parser.parse_args()
    if args.database and not is_postgres(args.database):
        parser.error("--database takes a postgresql:// URL (without it, the soak runs on a SQLite file)")
    workers_wanted = args.workers or (2 if args.database else 1)

    workdir = Path(tempfile.mkdtemp(prefix="deskroute-soak-"))
    if args.database:
        with fresh_database(args.database, "bench_soak", keep=args.keep) as database_url:
            code = soak(args, workdir, database_url, workers_wanted)
            where = f"{describe(database_url)} ({'kept' if args.keep else 'dropped'})"
    else:
        db = workdir / "soak.db"
        code = soak(args, workdir, f"sqlite:///{db}", workers_wanted)
        where = str(db)
    print(f"logs: {workdir}   database: {where}")
    return code


def soak(args: argparse.Namespace, workdir: Path, database_url: str, workers_wanted: int) -> int:
    fake = fake_helpdesk(args.platform)
    fake.random_faults = {429: args.fail_429, 503: args.fail_503}
    fake.retry_after = 1.0
    netloc = fake.start()
    env = environment(database_url, args.platform, netloc)
    store = Store(database_url)  # the bench's own view of the database, for counts
    ids = list(range(100_001, 100_001 + args.tickets))
    for n, ticket_id in enumerate(ids):
        subject, description = SAMPLE_TICKETS[n % len(SAMPLE_TICKETS)]
        fake.add_ticket(ticket_id, subject=subject, description=f"{description} (#{n})", tags=["web_form"])

    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", str(args.web_workers),
                            "--bind", f"127.0.0.1:{port}", "connector:create_app()"], env=env, cwd=ROOT,
                           stdout=(workdir / "web.log").open("wb"), stderr=subprocess.STDOUT)
    logs = [workdir / (f"worker-{i + 1}.log" if workers_wanted > 1 else "worker.log") for i in range(workers_wanted)]
    workers = [start_worker(env, log) for log in logs]
    try:
        return _soak(args, fake, store, env, port, web, workers, logs, ids)
    finally:
        for process in (*workers, web):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (*workers, web):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        fake.stop()
        store.close()


def _soak(args: argparse.Namespace, fake: FakeHelpdesk, store: Store, env: dict[str, str], port: int,
          web: subprocess.Popen, workers: list[subprocess.Popen], logs: list[Path], ids: list[int]) -> int:
    url = f"http://127.0.0.1:{port}/webhooks/{args.platform}"
    sqlite_file = Path(store.path) if store.dialect == "sqlite" else None
    deadline = time.time() + 120
    while time.time() < deadline:  # the worker trains the first model; the web comes up meanwhile
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok \
                    and (sqlite_file is None or sqlite_file.exists()) and database_ready(store):
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)

    deliveries = ids + ids[:: max(1, round(1 / args.duplicates))] if args.duplicates > 0 else list(ids)
    statuses: dict[int, list[int]] = {}
    lock = threading.Lock()
    session_local = threading.local()

    def send(ticket_id: int) -> None:
        session = getattr(session_local, "session", None) or requests.Session()
        session_local.session = session
        body = json.dumps({"ticket_id": str(ticket_id), "event": "ticket.created"}).encode()
        for _ in range(20):  # a real sender retries 5xx and connection errors
            try:
                status = session.post(url, data=body, headers=webhook_headers(args.platform, body),
                                      timeout=10).status_code
            except requests.RequestException:
                status = 0
            if status and status < 500:
                break
            time.sleep(0.5)
        with lock:
            statuses.setdefault(ticket_id, []).append(status)

    kills_at = {round(len(deliveries) * (k + 1) / (args.kills + 1)) for k in range(args.kills)}
    started = time.time()
    kills = 0
    with ThreadPoolExecutor(args.senders) as pool:
        for n, future in enumerate([pool.submit(send, t) for t in deliveries]):
            future.result()
            if n in kills_at:
                victim = kills % len(workers)  # round-robin over the worker processes
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                kills += 1
                which = f" {victim + 1} of {len(workers)}" if len(workers) > 1 else ""
                print(f"SIGKILLed the worker{which} after {n} deliveries; restarting it", file=sys.stderr)
                workers[victim] = start_worker(env, logs[victim])
    sent_seconds = time.time() - started

    deadline = time.time() + 900
    while time.time() < deadline:
        state = counts(store)
        if not state.get("pending") and not state.get("running"):
            break
        time.sleep(1)
    for process in (*workers, web):
        process.send_signal(signal.SIGTERM)
    for process in (*workers, web):
        process.wait(30)
    fake.stop()

    accepted = {t for t, s in statuses.items() if 202 in s}
    final = {r["ticket_id"]: r["state"]
             for r in store.db.execute("SELECT ticket_id, state FROM events WHERE kind = 'ticket.created'")}
    spans = [r["span"] for r in store.db.execute("SELECT finished_at - received_at AS span FROM events"
                                                 " WHERE kind = 'ticket.created' AND finished_at IS NOT NULL")]
    bounds = store.db.execute("SELECT min(received_at) AS first, max(finished_at) AS last FROM events")[0]
    first, last = bounds["first"], bounds["last"]
    writes = {t: len(fake.applied.get(t, [])) for t in ids}
    notes = {t: len(fake.private_notes(t)) for t in ids}
    once = sum(1 for t in accepted if writes[t] == 1 and notes[t] == 1)  # routed, and the note says why
    duplicate_writes = sum(max(0, w - 1) for w in writes.values())
    # Freshdesk's note is a call of its own: an agent would see a repeated one, so it counts too.
    duplicate_notes = sum(max(0, n - 1) for n in notes.values())
    triage = sum(1 for t in accepted if final.get(str(t)) == "triage")
    dead = sum(1 for t in accepted if final.get(str(t)) == "dead")
    lost = sum(1 for t in accepted if final.get(str(t)) not in ("done", "triage", "dead")
               or (final.get(str(t)) in ("done", "triage") and writes[t] == 0))
    spans.sort()
    print(f"platform: {args.platform}, tickets: {len(ids)}, deliveries: {len(deliveries)}"
          f" ({len(deliveries) - len(ids)} duplicates), worker SIGKILLs: {kills}")
    print(f"database: {store.dialect}, web workers: {args.web_workers}, worker processes: {len(workers)}"
          f" x {env['DESKROUTE_WORKER_THREADS']} threads")
    print(f"accepted: {len(accepted)}   written back exactly once: {once}   in triage: {triage}   dead: {dead}")
    print(f"lost: {lost}   duplicate writes: {duplicate_writes}   duplicate notes: {duplicate_notes}")
    print(f"helpdesk calls: {len(fake.requests)} (random 429 share {args.fail_429}, 503 share {args.fail_503})")
    if isinstance(fake, FakeZendesk):  # signed in with OAuth alone; 60-second tokens shared by every process
        print(f"oauth tokens issued: {len(fake.oauth.grants_issued)}   api token calls: {fake.basic_calls}")
    print(f"deliveries sent in {sent_seconds:.1f} s; all finished {last - first:.1f} s after the first arrived:"
          f" {len(spans) / (last - first):.1f} tickets/s")
    if spans:
        p99 = spans[min(len(spans) - 1, int(len(spans) * 0.99))]
        print(f"end-to-end latency: p50 {statistics.median(spans):.2f} s, p99 {p99:.2f} s")
    return 0 if lost == 0 and duplicate_writes == 0 and duplicate_notes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
