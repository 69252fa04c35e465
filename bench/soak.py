"""Soak: thousands of signed webhooks, a flaky helpdesk, and a worker killed with SIGKILL twice.

    python bench/soak.py [--platform zendesk|freshdesk] [--tickets 5000] [--duplicates 0.1]
                         [--fail-429 0.05] [--fail-503 0.05] [--kills 2]

Runs the Procfile's processes for real: gunicorn (`connector:create_app()`) for the web, and
`deskroute worker` (SIGKILLed mid-run and restarted, `--kills` times), against a loopback fake of the
helpdesk (Zendesk unless told otherwise) that answers a share of calls with 429 (Retry-After: 1) or
503. Then it waits for the queue to drain and reports, from the fake's own record of writes and from
the database: tickets accepted, written back exactly once, in triage, dead, lost (must be 0),
duplicate writes and duplicate notes (must be 0), throughput, and end-to-end latency (webhook received to final state).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
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
from connector.demo import SAMPLE_TICKETS, mapped_groups  # noqa: E402
from platforms.fakes.base import FakeHelpdesk  # noqa: E402
from platforms.fakes.freshdesk import FakeFreshdesk  # noqa: E402
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, FakeZendesk  # noqa: E402
from platforms.freshdesk import TOKEN_HEADER_NAME  # noqa: E402
from platforms.zendesk import signed_headers  # noqa: E402

SECRET = "soak-webhook-secret"


def environment(workdir: Path, platform: str, netloc: str) -> dict[str, str]:
    """The processes' settings: only the soaked helpdesk is configured, pointed at its fake."""
    helpdesk = ({"ZENDESK_SUBDOMAIN": "soak", "ZENDESK_OAUTH_CLIENT_ID": OAUTH_CLIENT_ID,
                 "ZENDESK_OAUTH_CLIENT_SECRET": OAUTH_CLIENT_SECRET, "ZENDESK_WEBHOOK_SECRET": SECRET,
                 "ZENPY_FORCE_NETLOC": netloc, "ZENPY_FORCE_SCHEME": "http"}
                if platform == "zendesk" else
                {"FRESHDESK_DOMAIN": "soak", "FRESHDESK_API_KEY": "soak-key", "FRESHDESK_WEBHOOK_SECRET": SECRET,
                 "FRESHDESK_BASE_URL": f"http://{netloc}"})
    return {**os.environ, "DATABASE_URL": f"sqlite:///{workdir / 'soak.db'}", **helpdesk,
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


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", choices=["zendesk", "freshdesk"], default="zendesk")
    parser.add_argument("--tickets", type=int, default=5000)
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--fail-429", type=float, default=0.05)
    parser.add_argument("--fail-503", type=float, default=0.05)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--senders", type=int, default=8)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="deskroute-soak-"))
    fake = fake_helpdesk(args.platform)
    fake.random_faults = {429: args.fail_429, 503: args.fail_503}
    fake.retry_after = 1.0
    netloc = fake.start()
    env = environment(workdir, args.platform, netloc)
    db = workdir / "soak.db"
    ids = list(range(100_001, 100_001 + args.tickets))
    for n, ticket_id in enumerate(ids):
        subject, description = SAMPLE_TICKETS[n % len(SAMPLE_TICKETS)]
        fake.add_ticket(ticket_id, subject=subject, description=f"{description} (#{n})", tags=["web_form"])

    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                            "connector:create_app()"], env=env, cwd=ROOT,
                           stdout=(workdir / "web.log").open("wb"), stderr=subprocess.STDOUT)
    worker = start_worker(env, workdir / "worker.log")
    url = f"http://127.0.0.1:{port}/webhooks/{args.platform}"
    deadline = time.time() + 120
    while time.time() < deadline:  # the worker trains the first model; the web comes up meanwhile
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok and db.exists():
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
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                kills += 1
                print(f"SIGKILLed the worker after {n} deliveries; restarting it", file=sys.stderr)
                worker = start_worker(env, workdir / "worker.log")
    sent_seconds = time.time() - started

    deadline = time.time() + 900
    while time.time() < deadline:
        state = counts(db)
        if not state.get("pending") and not state.get("running"):
            break
        time.sleep(1)
    worker.send_signal(signal.SIGTERM)
    web.send_signal(signal.SIGTERM)
    worker.wait(30)
    web.wait(30)
    fake.stop()

    accepted = {t for t, s in statuses.items() if 202 in s}
    with sqlite3.connect(db) as conn:
        final = dict(conn.execute("SELECT ticket_id, state FROM events WHERE kind = 'ticket.created'").fetchall())
        spans = [r[0] for r in conn.execute("SELECT finished_at - received_at FROM events"
                                            " WHERE kind = 'ticket.created' AND finished_at IS NOT NULL")]
        first, last = conn.execute("SELECT min(received_at), max(finished_at) FROM events").fetchone()
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
    print(f"logs and database: {workdir}")
    return 0 if lost == 0 and duplicate_writes == 0 and duplicate_notes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
