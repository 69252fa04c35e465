"""Helpers for tests: a controllable clock, test settings, signed requests, Zendesk payloads."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import responses

from connector.models import TicketEvent
from connector.services import Services
from connector.settings import Settings
from databases import database_url
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET
from platforms.zendesk import ZendeskPlatform
from platforms.zendesk import signed_headers as zendesk_signed_headers
from platforms.zendesk_oauth import MemoryVault, TokenProvider, ZendeskOAuth

PROJECT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SECRET = "test-webhook-secret"
ZENDESK_HOST = "https://acme.zendesk.com"
ZENDESK = f"{ZENDESK_HOST}/api/v2"
# Group ids from mappings/zendesk.yaml.
TRIAGE_GROUP, BILLING_GROUP = 360000000100, 360000000101


class FakeClock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def iso(self) -> str:
        return self.datetime().strftime("%Y-%m-%dT%H:%M:%SZ")


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: a fresh database, the project's mappings, Zendesk configured."""
    values: dict[str, Any] = {
        "database_url": database_url(tmp_path),
        "zendesk_subdomain": "acme",
        "zendesk_oauth_client_id": OAUTH_CLIENT_ID,
        "zendesk_oauth_client_secret": OAUTH_CLIENT_SECRET,
        "zendesk_webhook_secret": SECRET,
        "deskroute_mappings_dir": PROJECT / "mappings",
        "deskroute_log_format": "text",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def signed_headers(body: bytes, clock: FakeClock, *, secret: str = SECRET, timestamp: str | None = None,
                   extra: dict[str, str] | None = None) -> dict[str, str]:
    """Headers Zendesk would send with this body, signed by the production signer."""
    return {**zendesk_signed_headers(secret, body, timestamp or clock.iso()), **(extra or {})}


def trigger_body(ticket_id: int | str, event: str = "ticket.created", **fields: Any) -> bytes:
    """The JSON body our Zendesk triggers send."""
    return json.dumps({"ticket_id": str(ticket_id), "event": event, **fields}).encode()


def zendesk_ticket(ticket_id: int, *, subject: str, description: str, tags: list[str] | None = None,
                   updated_at: str = "2026-11-22T09:00:00Z", group_id: int | None = None,
                   status: str = "new", assignee_id: int | None = None,
                   created_at: str | None = None) -> dict[str, Any]:
    """A `GET /api/v2/tickets/{id}.json` answer, shaped like Zendesk's own example. No `created_at` unless
    given: these tests' clocks are not the example's, and the worker skips its age check without one."""
    ticket = json.loads((FIXTURES / "zendesk" / "oas_ticket_show_example.json").read_text())["ticket"]
    ticket.update(id=ticket_id, subject=subject, raw_subject=subject, description=description,
                  tags=list(tags or []), updated_at=updated_at, group_id=group_id, priority=None, status=status,
                  assignee_id=assignee_id, created_at=created_at, url=f"{ZENDESK}/tickets/{ticket_id}.json")
    return {"ticket": ticket}


def zendesk_platform(**options: Any) -> ZendeskPlatform:
    """A ZendeskPlatform on OAuth client credentials, for tests that never reach its API."""
    client = ZendeskOAuth(subdomain="acme", client_id=OAUTH_CLIENT_ID, client_secret=OAUTH_CLIENT_SECRET)
    return ZendeskPlatform(subdomain="acme", webhook_secret=options.pop("webhook_secret", SECRET),
                           tokens=TokenProvider(client, MemoryVault()), **options)


def token_answer(token: str = "access-token-1", expires_in: int = 1800) -> dict[str, Any]:
    """What Zendesk's `POST /oauth/tokens` answers to the client-credentials grant."""
    return {"access_token": token, "token_type": "bearer", "scope": "read write", "expires_in": expires_in}


def put_bodies(mock: responses.RequestsMock, ticket_id: int) -> list[dict[str, Any]]:
    """The `ticket` objects of every PUT sent for this ticket."""
    url = f"{ZENDESK}/tickets/{ticket_id}.json"
    return [json.loads(call.request.body)["ticket"] for call in mock.calls
            if call.request.method == "PUT" and call.request.url == url]


def drain(services: Services, *, limit: int = 50) -> int:
    """Run a worker until the queue has nothing due; returns the number of jobs processed."""
    worker = services.make_worker()
    for n in range(limit):
        if not worker.run_once():
            return n
    raise AssertionError("queue did not drain")


def claude_answer(category: str = "billing", confidence: float = 0.95, **overrides: Any) -> dict[str, Any]:
    """A valid route_ticket tool input, as Claude would give it."""
    return {"category": category, "category_confidence": confidence, "priority": "high", "priority_confidence": 0.9,
            "sentiment": "negative", "sentiment_confidence": 0.9, "language": "en", "language_confidence": 0.99,
            "summary": "Customer reports a billing problem.", "reason": "Mentions a charge on the account.",
            **overrides}


def cli_environment(monkeypatch: Any, workdir: Path, database_url: str, **settings: str) -> None:
    """Point `deskroute` commands at a database and the project's mappings, from a directory with no .env."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DESKROUTE_MAPPINGS_DIR", str(PROJECT / "mappings"))
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


ADMIN_PASSWORD = "correct horse battery staple"
HTTPS = {"base_url": "https://localhost"}  # the admin's session cookie is Secure


def csrf(client: Any, path: str = "/admin/login") -> str:
    """The CSRF token of an admin page's form."""
    page = client.get(path, **HTTPS).get_data(as_text=True)
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def login(client: Any, password: str = ADMIN_PASSWORD, *, name: str = "", **environ: Any) -> Any:
    """Log in to the admin UI through its form (with a name: as that named user)."""
    return client.post("/admin/login", data={"name": name, "password": password, "csrf_token": csrf(client)},
                       **HTTPS, **environ)

# A ticket the local model can't place, so that Claude decides it.
VAGUE_TICKET = "Following up on what we discussed on the phone with Maria last week"


def route_new_ticket(services: Services, api: responses.RequestsMock, ticket_id: int, text: str) -> None:
    """A Zendesk ticket with this text is created and its webhook event processed to the end."""
    api.get(f"{ZENDESK}/tickets/{ticket_id}.json", json=zendesk_ticket(ticket_id, subject="Question",
                                                                          description=text))
    api.put(f"{ZENDESK}/tickets/{ticket_id}.json",
            body=(FIXTURES / "zendesk" / "ticket_update_response_200.json").read_text())
    services.queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id=str(ticket_id),
                                       dedup_key=f"ticket.created:{ticket_id}"))
    drain(services)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll until `predicate()` holds, or fail saying what never happened (work in another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def chromium() -> tuple[str, str]:
    """Headless Chromium's browser and driver, or skip the test saying how to install them."""
    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    return browser, driver


def category_metrics(client: Any, category: str) -> dict[tuple[str, str | None], float]:
    """The /metrics samples of one category, by (metric name, window)."""
    from prometheus_client.parser import text_string_to_metric_families

    metrics = client.get("/metrics").get_data(as_text=True)
    return {(s.name, s.labels.get("window")): s.value for f in text_string_to_metric_families(metrics)
            for s in f.samples if s.labels.get("category") == category}
