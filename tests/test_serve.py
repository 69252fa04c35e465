"""`deskroute serve` as a real process: starts with no credentials, and routes a ticket end to end
against the loopback fake Zendesk."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from databases import database_url
from helpers import PROJECT, FakeClock, signed_headers, trigger_body, wait_for
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, FakeZendesk

GROUPS = {360000000100: "Triage", 360000000101: "Billing", 360000000102: "Access"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("ZENDESK_", "FRESHDESK_", "DESKROUTE_", "ZENPY_", "ANTHROPIC_"))
                and k != "DATABASE_URL"}
    process = subprocess.Popen([sys.executable, "-m", "connector", "serve", "--port", str(port)], cwd=tmp_path,
                               env={**base_env, "PYTHONPATH": str(PROJECT), **env}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{process.stdout.read() if process.stdout else ''}")
        try:
            return requests.get(f"{url}/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(healthy, what="/health")
    return process, url


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    return output


def test_serve_stopped_while_its_first_model_trains_exits_cleanly_and_frees_the_training(tmp_path: Path) -> None:
    """SIGTERM in the first seconds of a fresh install lands mid-training: the interpreter's exit used to tear
    down the training's native threads and abort the process (seen in CI as exit -6). It exits 0, and gives
    the training lease up, so the next start trains at once instead of waiting 2 minutes for it to run out."""
    import shutil

    import yaml

    from connector.model_keeper import TRAIN_LOCK
    from connector.store import Store

    # A taxonomy with 20 times the examples: its first model takes long enough to be stopped in the middle.
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT / "mappings", mappings)
    taxonomy = yaml.safe_load((mappings / "taxonomy.yaml").read_text())
    for category in taxonomy["categories"].values():
        category["examples"] = [f"{text} (case {n})" for n in range(20) for text in category["examples"]]
    (mappings / "taxonomy.yaml").write_text(yaml.safe_dump(taxonomy))
    process, _ = start_serve(tmp_path, {"DESKROUTE_MAPPINGS_DIR": str(mappings)})
    store = Store(f"sqlite:///{tmp_path / 'deskroute.db'}")  # serve's embedded default, made and migrated by now
    try:
        wait_for(lambda: store.auth.holder(TRAIN_LOCK, now=time.time()), what="the first model training")
    finally:
        output = stop(process)
    assert "stopped during a training" in output
    assert not store.auth.holder(TRAIN_LOCK, now=time.time())


@pytest.fixture
def fake_zendesk() -> Iterator[tuple[FakeZendesk, str]]:
    fake = FakeZendesk(groups=GROUPS, refuse_basic=True)
    netloc = fake.start()
    yield fake, netloc
    fake.stop()


def test_serve_starts_with_no_credentials(tmp_path: Path) -> None:
    process, url = start_serve(tmp_path, {})
    try:
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["status"] == "ok"
        assert health["platforms"]["zendesk"]["configured"] is False
        assert health["platforms"]["freshdesk"]["configured"] is False
        assert requests.post(f"{url}/webhooks/zendesk", data=b"{}", timeout=5).status_code == 404
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 200
    finally:
        output = stop(process)
    assert "zendesk: not configured (set ZENDESK_SUBDOMAIN" in output
    assert (tmp_path / "deskroute.db").exists()  # the embedded default database


def test_serve_routes_a_ticket_end_to_end(tmp_path: Path, fake_zendesk: tuple[FakeZendesk, str]) -> None:
    fake, netloc = fake_zendesk
    fake.add_ticket(501, subject="Invoice for October missing", description="Please resend our October invoice.",
                    tags=["from_email"])
    # Billing or refunds? Both go to the Billing group in the default mappings: that is where it lands,
    # as one category or as a group-level decision (tests/test_group_level.py).
    fake.add_ticket(502, subject="Charged twice for my subscription",
                    description="I was charged twice for my subscription this month, please refund the duplicate "
                                "charge.", tags=[])
    secret = "loopback-secret"
    process, url = start_serve(tmp_path, {
        "ZENDESK_SUBDOMAIN": "acme", "ZENDESK_OAUTH_CLIENT_ID": OAUTH_CLIENT_ID,
        "ZENDESK_OAUTH_CLIENT_SECRET": OAUTH_CLIENT_SECRET,
        "ZENDESK_WEBHOOK_SECRET": secret, "ZENPY_FORCE_NETLOC": netloc, "ZENPY_FORCE_SCHEME": "http",
        "DESKROUTE_LOG_FORMAT": "json",
    })
    try:
        clock = FakeClock(time.time())
        body = trigger_body(501)
        for _ in range(3):  # a delivery and two retries of it
            requests.post(f"{url}/webhooks/zendesk", data=body, headers=signed_headers(body, clock, secret=secret),
                          timeout=5)
        double = trigger_body(502)
        requests.post(f"{url}/webhooks/zendesk", data=double, headers=signed_headers(double, clock, secret=secret),
                      timeout=5)
        wait_for(lambda: fake.tickets[501]["group_id"] == 360000000101, what="the ticket to be routed")
        wait_for(lambda: fake.tickets[502]["group_id"] == 360000000101, what="the double charge to go to Billing")
        time.sleep(0.5)  # give a wrongful second write the chance to happen
        assert len(fake.updates(501)) == 1
        ticket = fake.tickets[501]
        assert ticket["tags"][0] == "from_email" and "deskroute_billing" in ticket["tags"]
        assert fake.comments[501][-1]["public"] is False
    finally:
        output = stop(process)
    assert "Invoice for October" not in output and secret not in output  # nothing private in the logs
    assert OAUTH_CLIENT_SECRET not in output and not any(token in output for token in fake.oauth.access_tokens)
    assert fake.basic_calls == 0


def test_worker_process_drains_the_queue_written_by_another_process(
        tmp_path: Path, fake_zendesk: tuple[FakeZendesk, str]) -> None:
    from connector.models import TicketEvent
    from connector.store import Store

    fake, netloc = fake_zendesk
    fake.add_ticket(601, subject="Locked out", description="I am locked out after too many attempts.")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ZENDESK_", "DESKROUTE_", "ZENPY_")) and k != "DATABASE_URL"}
    env.update({"PYTHONPATH": str(PROJECT), "DATABASE_URL": database_url(tmp_path, "shared.db"),
                "ZENDESK_SUBDOMAIN": "acme", "ZENDESK_OAUTH_CLIENT_ID": OAUTH_CLIENT_ID,
                "ZENDESK_OAUTH_CLIENT_SECRET": OAUTH_CLIENT_SECRET,
                "ZENDESK_WEBHOOK_SECRET": "s", "ZENPY_FORCE_NETLOC": netloc, "ZENPY_FORCE_SCHEME": "http"})
    process = subprocess.Popen([sys.executable, "-m", "connector", "worker"], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        store = Store(env["DATABASE_URL"])  # the web process's side of the queue
        store.migrate()
        store.events.insert(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id="601",
                                       dedup_key="ticket.created:601"), now=time.time())
        wait_for(lambda: fake.tickets[601]["group_id"] == 360000000102, what="the worker to route the ticket")
    finally:
        stop(process)
    assert len(fake.updates(601)) == 1


def test_serve_with_only_freshdesk_settings_routes_a_ticket(tmp_path: Path) -> None:
    from platforms.fakes.freshdesk import FakeFreshdesk

    fake = FakeFreshdesk(api_key="fd-key", groups={103000000100: "Triage", 103000000102: "Access"})
    address = fake.start()
    fake.add_ticket(701, subject="Can't log in", description="I'm locked out after too many attempts.",
                    tags=["portal"])
    process, url = start_serve(tmp_path, {"FRESHDESK_DOMAIN": "acme", "FRESHDESK_API_KEY": "fd-key",
                                          "FRESHDESK_WEBHOOK_SECRET": "rule-secret",
                                          "FRESHDESK_BASE_URL": f"http://{address}"})
    try:
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["platforms"]["freshdesk"]["configured"] is True
        assert health["platforms"]["zendesk"]["configured"] is False
        wrong = requests.post(f"{url}/webhooks/freshdesk", json={"ticket_id": "701"},
                              headers={"X-Deskroute-Token": "guess"}, timeout=5)
        assert wrong.status_code == 401
        for _ in range(2):
            requests.post(f"{url}/webhooks/freshdesk", json={"ticket_id": "701", "event": "ticket.created"},
                          headers={"X-Deskroute-Token": "rule-secret"}, timeout=5)
        wait_for(lambda: fake.tickets[701]["group_id"] == 103000000102, what="the ticket to be routed")
        wait_for(lambda: len(fake.private_notes(701)) == 1, what="the note")
        time.sleep(0.5)
        assert len(fake.applied[701]) == 1 and fake.tickets[701]["priority"] == 3  # account_access: high
        assert fake.tickets[701]["tags"][0] == "portal"
    finally:
        stop(process)
        fake.stop()


def test_oauth_only_install_routes_every_ticket_once_while_tokens_expire_every_4_seconds(tmp_path: Path) -> None:
    """Only ZENDESK_SUBDOMAIN, the OAuth client's id and secret and the webhook secret; a Zendesk that
    refuses API tokens and whose access tokens live 4 s; `serve` plus a second `deskroute worker`
    sharing its database; 30 tickets over 15 s."""
    fake = FakeZendesk(groups=GROUPS, refuse_basic=True, token_seconds=4)
    netloc = fake.start()
    secret = "oauth-e2e-secret"
    settings = {"ZENDESK_SUBDOMAIN": "acme", "ZENDESK_OAUTH_CLIENT_ID": OAUTH_CLIENT_ID,
                "ZENDESK_OAUTH_CLIENT_SECRET": OAUTH_CLIENT_SECRET, "ZENDESK_WEBHOOK_SECRET": secret,
                "ZENPY_FORCE_NETLOC": netloc, "ZENPY_FORCE_SCHEME": "http", "DESKROUTE_WORKER_THREADS": "2"}
    process, url = start_serve(tmp_path, settings)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("ZENDESK_", "DESKROUTE_", "ZENPY_"))}
    worker = subprocess.Popen([sys.executable, "-m", "connector", "worker"], cwd=tmp_path, text=True,
                              env={**base_env, "PYTHONPATH": str(PROJECT), **settings},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ids = list(range(7001, 7031))
    started = time.monotonic()
    try:
        clock = FakeClock(time.time())
        for n, ticket_id in enumerate(ids):
            fake.add_ticket(ticket_id, subject=f"Invoice {ticket_id} missing",
                            description="Please resend the invoice for last month.", tags=["from_email"])
            clock.now = time.time()
            body = trigger_body(ticket_id)
            answer = requests.post(f"{url}/webhooks/zendesk", data=body, timeout=5,
                                   headers=signed_headers(body, clock, secret=secret))
            assert answer.status_code == 202
            time.sleep(max(0.0, started + (n + 1) * 0.5 - time.monotonic()))
        wait_for(lambda: all(fake.applied.get(i) for i in ids), timeout=60, what="every ticket to be routed")
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # room for a wrongful second write
        assert [len(fake.applied[i]) for i in ids] == [1] * 30  # lost 0, written twice 0
        assert [len(fake.private_notes(i)) for i in ids] == [1] * 30
        assert fake.basic_calls == 0
        issued = len(fake.oauth.grants_issued)
        # Renewed as tokens expired, and shared: two processes minting their own would need twice as many.
        assert 3 <= issued <= elapsed / 2 + 2, (issued, elapsed)
    finally:
        output = stop(process)
        worker.send_signal(signal.SIGTERM)
        worker_output, _ = worker.communicate(timeout=20)
        fake.stop()
    for log in (output, worker_output):
        assert OAUTH_CLIENT_SECRET not in log and not any(token in log for token in fake.oauth.access_tokens)


def test_serve_refuses_an_announced_huge_body_at_once(tmp_path: Path) -> None:
    process, url = start_serve(tmp_path, {"DESKROUTE_MAX_BODY_BYTES": "4096"})
    try:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"POST /webhooks/zendesk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 209715200\r\n\r\n" + b"{" * 1024)  # 200 MB announced, 1 KB sent
            conn.settimeout(5)
            answer = conn.recv(200)  # before the server has read (or stored) the rest
        assert answer.startswith(b"HTTP/1.1 413"), answer
    finally:
        stop(process)
