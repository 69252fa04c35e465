"""`POST /webhooks/zendesk`: bad input gets a JSON 4xx or 200 {"ignored": ...}, never a 5xx, never a job."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from connector import create_app
from connector.services import Services
from connector.store import StoreUnavailable
from helpers import FakeClock, signed_headers, trigger_body


def jobs(services: Services) -> int:
    return len(services.store.events.recent(limit=1000))


def post_signed(client: Any, body: bytes, clock: FakeClock) -> Any:
    return client.post("/webhooks/zendesk", data=body, headers=signed_headers(body, clock))


@pytest.mark.parametrize(("body", "status", "key"), [
    (b"this is not json", 400, "error"),
    (b'{"event": "ticket.created"}', 400, "error"),                 # no ticket id
    (b'{"ticket_id": "not-a-number"}', 400, "error"),
    (b"[]", 400, "error"),
    (trigger_body(5, "ticket.solved"), 200, "ignored"),             # a valid event we don't use
    (json.dumps({"type": "zen:event-type:user.deleted", "id": "x", "detail": {"id": "1"}}).encode(), 200, "ignored"),
    (json.dumps({"type": "zen:event-type:ticket.custom_field_changed", "id": "y",
                 "detail": {"id": "5"}}).encode(), 200, "ignored"),
])
def test_unusable_signed_bodies(client: Any, services: Services, clock: FakeClock, body: bytes, status: int,
                                key: str) -> None:
    response = post_signed(client, body, clock)
    assert response.status_code == status
    assert response.is_json and key in response.json
    assert jobs(services) == 0


def test_huge_body_is_413_before_anything_else(client: Any, services: Services, clock: FakeClock) -> None:
    body = json.dumps({"ticket_id": "5", "padding": "x" * (2 * 1024 * 1024)}).encode()
    response = post_signed(client, body, clock)
    assert response.status_code == 413 and response.is_json
    assert jobs(services) == 0


def test_huge_chunked_body_is_413(client: Any, services: Services, clock: FakeClock) -> None:
    import io

    body = b"x" * (2 * 1024 * 1024)
    # A chunked upload: no Content-Length; the server marks the input as terminated (gunicorn does).
    response = client.post("/webhooks/zendesk", input_stream=io.BytesIO(body), headers=signed_headers(body, clock),
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413 and response.is_json
    assert jobs(services) == 0


@pytest.mark.parametrize("headers", [
    {},
    {"X-Zendesk-Webhook-Signature": "bm9wZQ==", "X-Zendesk-Webhook-Signature-Timestamp": "2026-11-22T00:00:00Z"},
])
def test_unsigned_or_badly_signed_is_401(client: Any, services: Services, headers: dict[str, str]) -> None:
    response = client.post("/webhooks/zendesk", data=trigger_body(5), headers=headers)
    assert response.status_code == 401 and response.json == {"error": "invalid request"}
    assert jobs(services) == 0


def test_replayed_signature_outside_the_window_is_401(client: Any, services: Services, clock: FakeClock) -> None:
    body = trigger_body(5)
    headers = signed_headers(body, clock)
    clock.advance(301)
    assert client.post("/webhooks/zendesk", data=body, headers=headers).status_code == 401
    assert jobs(services) == 0


def test_header_names_are_case_insensitive(client: Any, services: Services, clock: FakeClock) -> None:
    body = trigger_body(5)
    headers = {k.upper(): v for k, v in signed_headers(body, clock).items()}
    assert client.post("/webhooks/zendesk", data=body, headers=headers).status_code == 202


def test_accepted_then_duplicate(client: Any, services: Services, clock: FakeClock) -> None:
    first = post_signed(client, trigger_body(5), clock)
    assert first.status_code == 202 and first.json["status"] == "queued"
    again = post_signed(client, trigger_body(5), clock)
    assert again.status_code == 200 and again.json == {"ignored": "duplicate", "event_id": first.json["event_id"]}
    assert jobs(services) == 1


def test_one_ticket_spelled_two_ways_is_one_event(client: Any, services: Services, clock: FakeClock) -> None:
    """ "0042", " 42" and 42 are the same ticket: a formatting quirk must not route it twice."""
    assert post_signed(client, json.dumps({"ticket_id": "0042", "event": "ticket.created"}).encode(),
                       clock).status_code == 202
    for spelling in (42, " 42"):
        again = post_signed(client, json.dumps({"ticket_id": spelling, "event": "ticket.created"}).encode(), clock)
        assert again.status_code == 200 and again.json["ignored"] == "duplicate"
    assert [e["ticket_id"] for e in services.store.events.recent(limit=10)] == ["42"]


def test_an_id_beyond_64_bits_is_400(client: Any, services: Services, clock: FakeClock) -> None:
    response = post_signed(client, json.dumps({"ticket_id": str(2**63), "event": "ticket.created"}).encode(), clock)
    assert response.status_code == 400
    assert jobs(services) == 0


def test_unknown_platform_and_wrong_method(client: Any) -> None:
    assert client.post("/webhooks/nope", data=b"{}").status_code == 404
    response = client.get("/webhooks/zendesk")
    assert response.status_code == 405 and response.is_json


def test_unconfigured_platform_is_404_and_says_so(tmp_path: Any) -> None:
    from helpers import make_settings

    services = Services(make_settings(tmp_path, zendesk_subdomain="", zendesk_webhook_secret=""))
    client = create_app(services=services).test_client()
    response = client.post("/webhooks/zendesk", data=trigger_body(5))
    assert response.status_code == 404 and response.json == {"error": "zendesk is not configured"}


def test_database_failure_is_503_so_zendesk_retries(client: Any, services: Services, clock: FakeClock,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(services.queue, "enqueue", locked)
    response = post_signed(client, trigger_body(5), clock)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5" and response.is_json


def test_a_locked_database_gets_a_503_within_seconds_not_the_30_second_busy_wait(
        client: Any, services: Services, clock: FakeClock) -> None:
    import time

    if services.store.dialect == "sqlite":
        holder = sqlite3.connect(services.store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a long migration, say)
    else:
        import psycopg

        holder = psycopg.connect(services.store.db.url.set(drivername="postgresql").render_as_string(False))
        holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # a long migration altering the table
    try:
        started = time.monotonic()
        response = post_signed(client, trigger_body(5), clock)
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert waited < 20, waited  # about 5 s: inside Zendesk's 10 s, so Zendesk hears the 503 and retries
    assert post_signed(client, trigger_body(5), clock).status_code == 202  # the retry is taken


def test_worker_in_the_same_process_is_woken(make_services: Callable[..., Services], clock: FakeClock) -> None:
    services = make_services()
    woken: list[bool] = []
    services.wake = lambda: woken.append(True)  # type: ignore[method-assign]
    client = create_app(services=services).test_client()
    post_signed(client, trigger_body(5), clock)
    post_signed(client, trigger_body(5), clock)  # a duplicate wakes nobody
    assert woken == [True]
