"""Freshdesk specifics: the token header, rule bodies, the exact wire format of a write, rate limits."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from connector import create_app
from connector.classify.local import LocalModel
from connector.feedback import save_model
from connector.models import ROUTED_TAG, Ignored, TicketEvent
from connector.services import Services
from helpers import FIXTURES, SECRET, FakeClock, drain, make_settings
from platforms.base import AUTH_RETRY_SECONDS, AuthFailed, BadPayload, PlatformError, Unauthorized
from platforms.fakes.freshdesk import FakeFreshdesk
from platforms.freshdesk import FreshdeskPlatform

API = "https://acme.freshdesk.com/api/v2"
FD = FreshdeskPlatform(domain="acme", api_key="key", webhook_secret=SECRET)
FRESHDESK = {"zendesk_subdomain": "", "zendesk_webhook_secret": "", "freshdesk_domain": "acme",
             "freshdesk_api_key": "fd-key", "freshdesk_webhook_secret": SECRET}


@pytest.mark.parametrize(("domain", "base_url", "expected"), [
    ("acme", "", "https://acme.freshdesk.com/api/v2"),
    ("acme.freshdesk.com", "", "https://acme.freshdesk.com/api/v2"),
    ("https://acme.freshdesk.com/", "", "https://acme.freshdesk.com/api/v2"),
    ("acme", "http://127.0.0.1:9000/", "http://127.0.0.1:9000/api/v2"),
])
def test_api_address(domain: str, base_url: str, expected: str) -> None:
    assert FreshdeskPlatform(domain=domain, api_key="k", webhook_secret="s", base_url=base_url).api == expected


@pytest.mark.parametrize(("headers", "ok"), [
    ({"x-deskroute-token": SECRET}, True),
    ({"x-deskroute-token": f" {SECRET} "}, True),      # stray whitespace from a copy-paste
    ({"x-deskroute-token": SECRET + "x"}, False),
    ({"x-deskroute-token": SECRET[:-1]}, False),
    ({"x-deskroute-token": ""}, False),
    ({}, False),
    ({"authorization": f"Bearer {SECRET}"}, False),
])
def test_token_header(headers: dict[str, str], ok: bool) -> None:
    if ok:
        FD.verify(headers, b"{}")
    else:
        with pytest.raises(Unauthorized):
            FD.verify(headers, b"{}")


@pytest.mark.parametrize(("body", "kind"), [
    ({"ticket_id": "42", "event": "ticket.created"}, "ticket.created"),
    ({"ticket_id": 42}, "ticket.created"),
    ({"freshdesk_webhook": {"ticket_id": 42}}, "ticket.created"),  # the rule's "simple" content mode
    ({"ticket_id": "42", "event": "ticket.group_changed"}, "ticket.group_changed"),
    ({"ticket_id": "42", "event": "ticket.updated", "group_id": "7"}, "ticket.group_changed"),
])
def test_rule_bodies(body: dict[str, Any], kind: str) -> None:
    event = FD.parse({}, json.dumps(body).encode())
    assert isinstance(event, TicketEvent) and event.kind == kind and event.ticket_id == "42"


def test_update_deliveries_are_one_event_within_a_minute_only() -> None:
    clock = FakeClock()
    fd = FreshdeskPlatform(domain="acme", api_key="k", webhook_secret=SECRET, now=clock.datetime)
    body = b'{"ticket_id": "42", "event": "ticket.group_changed"}'
    first, again = fd.parse({}, body), fd.parse({}, body)
    clock.advance(120)
    later = fd.parse({}, body)
    assert isinstance(first, TicketEvent) and isinstance(again, TicketEvent) and isinstance(later, TicketEvent)
    assert first.dedup_key == again.dedup_key != later.dedup_key


@pytest.mark.parametrize(("body", "message"), [
    (b"<xml/>", "not valid JSON"),
    (b'"42"', "JSON object"),
    (b'{"ticket_id": "{{ticket.id}}"}', "positive integer"),
    (b'{"event": "ticket.created"}', "missing"),
    (b'{"ticket_id": 1, "event": ["x"]}', "event must be a string"),
])
def test_bad_rule_bodies(body: bytes, message: str) -> None:
    with pytest.raises(BadPayload, match=message):
        FD.parse({}, body)


def test_other_events_are_ignored() -> None:
    assert isinstance(FD.parse({}, b'{"ticket_id": 1, "event": "ticket.deleted"}'), Ignored)


# --- the wire format, checked with `responses` --------------------------------------------------

@pytest.fixture
def services(tmp_path: Path, clock: FakeClock, taxonomy_model: LocalModel) -> Services:
    settings = make_settings(tmp_path, **FRESHDESK)
    platform = FreshdeskPlatform.from_settings(settings, now=clock.datetime, sleep=lambda s: None)
    services = Services(settings, platforms={"freshdesk": platform}, clock=clock)
    save_model(services.store, taxonomy_model, source="tests", activate=True)
    return services


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def ticket_json(ticket_id: int, tags: list[str]) -> dict[str, Any]:
    ticket = json.loads((FIXTURES / "freshdesk" / "ticket_1.json").read_text())
    ticket.update(id=ticket_id, subject="Charged twice this month", tags=tags, responder_id=None, created_at=None,
                  description_text="My card shows two charges of $49 on the 3rd.")
    return ticket


@pytest.mark.parametrize(("status", "responder", "solved", "taken_up"), [
    (2, None, False, False), (2, 6010396333, False, True), (3, None, False, True), (4, None, True, True),
    (5, None, True, True)])
def test_a_fetched_ticket_says_whether_it_is_assigned_answered_resolved_or_closed(
        api: responses.RequestsMock, status: int, responder: int | None, solved: bool, taken_up: bool) -> None:
    """A retry leaves a ticket that people took on, answered or resolved in triage where it is
    (connector/worker.py)."""
    api.get(f"{API}/tickets/7", json={**ticket_json(7, []), "status": status, "responder_id": responder})
    fd = FreshdeskPlatform(domain="acme", api_key="k", webhook_secret=SECRET, sleep=lambda s: None)
    ticket = fd.fetch_ticket("7")
    assert (ticket.solved, ticket.taken_up) == (solved, taken_up)


def test_created_webhook_gives_one_flat_put_and_one_private_note(
        services: Services, api: responses.RequestsMock) -> None:
    note = json.loads((FIXTURES / "freshdesk" / "note_1.json").read_text())
    api.get(f"{API}/tickets/7", json=ticket_json(7, ["vip", "from_email"]))
    # After our write, as the update rule's webhook makes Deskroute look again: still in our group.
    api.get(f"{API}/tickets/7", json={**ticket_json(7, ["vip"]), "group_id": 103000000101})
    api.put(f"{API}/tickets/7", json=ticket_json(7, ["vip"]))
    api.post(f"{API}/tickets/7/notes", json=note, status=201)
    client = create_app(services=services).test_client()
    body = b'{"ticket_id": "7", "event": "ticket.created"}'
    for _ in range(3):  # Freshdesk retries a delivery it thinks failed
        client.post("/webhooks/freshdesk", data=body, headers={"X-Deskroute-Token": SECRET})
    client.post("/webhooks/freshdesk", data=b'{"ticket_id": "7", "event": "ticket.group_changed"}',
                headers={"X-Deskroute-Token": SECRET})
    drain(services)

    [get, put, post, look_again] = api.calls
    assert put.request.method == "PUT" and post.request.method == "POST" and look_again.request.method == "GET"
    assert services.store.corrections.find() == []  # our own write is not a correction
    assert json.loads(put.request.body) == {
        "group_id": 103000000101,   # mappings/freshdesk.yaml, billing
        "priority": 2,              # normal is Freshdesk's 2 (Medium)
        "tags": ["vip", "from_email", ROUTED_TAG, "billing", "deskroute_billing", "deskroute_tier_rules",
                 "deskroute_conf_high"],
    }
    sent_note = json.loads(post.request.body)
    assert sent_note["private"] is True and sent_note["body"].startswith("Deskroute routed this ticket to billing")
    assert "<br>" in sent_note["body"]
    auth = base64.b64decode(get.request.headers["Authorization"].removeprefix("Basic ")).decode()
    assert auth == "fd-key:X"  # the API key as user, any password


def test_validation_errors_are_summarised_without_request_data(services: Services,
                                                               api: responses.RequestsMock) -> None:
    api.get(f"{API}/tickets/8", json=ticket_json(8, []))
    api.put(f"{API}/tickets/8", status=400, json={"description": "Validation failed", "errors": [
        {"field": "group_id", "message": "There is no group matching the given group_id", "code": "invalid_value"}]})
    api.put(f"{API}/tickets/8", json=ticket_json(8, []))
    api.post(f"{API}/tickets/8/notes", status=201, json={})
    services.queue.enqueue(TicketEvent(platform="freshdesk", kind="ticket.created", ticket_id="8", dedup_key="k8"))
    drain(services)
    record = services.store.tickets.get("freshdesk", "8")
    assert record is not None and record.state == "triage"
    fallback = json.loads(api.calls[2].request.body)
    assert fallback["group_id"] == 103000000100
    note = json.loads(api.calls[3].request.body)["body"]
    assert "400 Validation failed: group_id: There is no group matching the given group_id" in note


# --- rate limits, against the loopback fake ---------------------------------------------------------

@pytest.fixture
def fake(clock: FakeClock) -> Iterator[tuple[FakeFreshdesk, str]]:
    fake = FakeFreshdesk(api_key="fd-key", groups={103000000100: "Triage", 103000000101: "Billing"},
                         rate_limit_per_minute=4, clock=clock)
    yield fake, fake.start()
    fake.stop()


def test_a_spent_minute_budget_defers_the_job_and_health_shows_what_is_left(
        tmp_path: Path, clock: FakeClock, taxonomy_model: LocalModel, fake: tuple[FakeFreshdesk, str]) -> None:
    fake_api, address = fake
    settings = make_settings(tmp_path, **FRESHDESK, freshdesk_base_url=f"http://{address}")
    waits: list[float] = []
    platform = FreshdeskPlatform.from_settings(settings, now=clock.datetime, sleep=waits.append)
    services = Services(settings, platforms={"freshdesk": platform}, clock=clock)
    save_model(services.store, taxonomy_model, source="tests", activate=True)
    for ticket_id in (1, 2):
        fake_api.add_ticket(ticket_id, subject="Invoice missing", description="Please resend the invoice")
        services.queue.enqueue(TicketEvent(platform="freshdesk", kind="ticket.created", ticket_id=str(ticket_id),
                                           dedup_key=f"ticket.created:{ticket_id}"))
    drain(services)
    # Ticket 1 used 3 of the 4 calls (GET, PUT, POST note); ticket 2's GET used the last, its PUT got a 429
    # whose Retry-After (up to 60 s) is past the 30 s wait budget: the job goes back to the queue.
    assert fake_api.applied.get(1) and not fake_api.applied.get(2)
    [pending] = [e for e in services.store.events.recent() if e["state"] == "pending"]
    assert pending["ticket_id"] == "2" and pending["last_error"].startswith("429")
    health = create_app(services=services).test_client().get("/health").json
    assert health["platforms"]["freshdesk"] == {"configured": True, "auth": "api_key", "status": "ok",
                                                "rate_limit_remaining": 0}
    assert waits == []


def test_only_freshdesk_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **FRESHDESK)
    health = create_app(services=Services(settings)).test_client().get("/health").json
    assert health["platforms"]["freshdesk"] == {"configured": True, "auth": "api_key", "status": "ok"}
    assert health["platforms"]["zendesk"]["configured"] is False


def test_a_refused_api_key_shows_in_health_until_a_call_gets_in(fake: tuple[FakeFreshdesk, str]) -> None:
    fake_api, address = fake
    wrong = FreshdeskPlatform(domain="acme", api_key="not-the-key", webhook_secret=SECRET, base_url=f"http://{address}")
    with pytest.raises(AuthFailed) as refused:
        wrong.list_groups()
    assert refused.value.status == 401 and refused.value.retryable
    # As Zendesk's: an event waits minutes, not the usual seconds, so a key reset at night doesn't
    # spend its ten attempts in a quarter of an hour before anyone can fix it.
    assert refused.value.retry_after == AUTH_RETRY_SECONDS and "FRESHDESK_API_KEY" in str(refused.value)
    assert "not-the-key" not in str(refused.value)
    assert wrong.auth_status()["status"] == "auth_failing"
    right = FreshdeskPlatform(domain="acme", api_key="fd-key", webhook_secret=SECRET, base_url=f"http://{address}")
    right.list_groups()
    assert right.auth_status() == {"auth": "api_key", "status": "ok"}


def test_a_401_noted_by_a_one_off_command_is_cleared_by_a_worker_whose_calls_get_in(
        tmp_path: Path, clock: FakeClock, fake: tuple[FakeFreshdesk, str]) -> None:
    """`deskroute doctor` run with an old key notes a 401 and exits; the worker, whose calls got in all along,
    looks again within a minute, so /health doesn't say auth_failing until every process restarts."""
    fake_api, address = fake
    fake_api.rate_limit_per_minute = 100
    settings = make_settings(tmp_path, **FRESHDESK, freshdesk_base_url=f"http://{address}")
    worker = Services(settings, clock=clock)
    worker.platforms["freshdesk"]._now = clock.datetime  # type: ignore[attr-defined]
    worker.platforms["freshdesk"].list_groups()
    old_shell = Services(make_settings(tmp_path, **{**FRESHDESK, "freshdesk_api_key": "an-old-key"},
                                       freshdesk_base_url=f"http://{address}"), clock=clock)
    with pytest.raises(PlatformError):
        old_shell.platforms["freshdesk"].list_groups()
    assert worker.platforms["freshdesk"].auth_status()["status"] == "auth_failing"
    clock.advance(10)
    worker.platforms["freshdesk"].list_groups()  # not a minute yet: the note stands
    assert worker.platforms["freshdesk"].auth_status()["status"] == "auth_failing"
    clock.advance(60)
    worker.platforms["freshdesk"].list_groups()
    assert worker.platforms["freshdesk"].auth_status() == {"auth": "api_key", "status": "ok"}


def test_make_services_builds_freshdesk_from_settings(tmp_path: Path) -> None:
    services = Services(make_settings(tmp_path, **FRESHDESK, freshdesk_base_url="http://127.0.0.1:1"))
    platform = services.platforms["freshdesk"]
    assert isinstance(platform, FreshdeskPlatform) and platform.api == "http://127.0.0.1:1/api/v2"



def test_a_refused_note_does_not_undo_the_routing(services: Services, api: responses.RequestsMock) -> None:
    api.get(f"{API}/tickets/9", json=ticket_json(9, []))
    api.put(f"{API}/tickets/9", json=ticket_json(9, []))
    api.post(f"{API}/tickets/9/notes", status=400, json={"description": "Validation failed", "errors": [
        {"field": "body", "message": "It should be a/an String", "code": "missing_field"}]})
    services.queue.enqueue(TicketEvent(platform="freshdesk", kind="ticket.created", ticket_id="9", dedup_key="k9"))
    drain(services)
    assert [c.request.method for c in api.calls] == ["GET", "PUT", "POST"]  # no second PUT to triage
    [event] = services.store.events.recent()
    assert event["state"] == "dead" and event["last_error"].startswith("note refused (400 Validation failed")


def test_a_key_refused_in_the_worker_shows_in_the_webs_health(tmp_path: Path, clock: FakeClock,
                                                              fake: tuple[FakeFreshdesk, str]) -> None:
    """The web process seldom calls Freshdesk: what the worker's calls find is shared through the database."""
    fake_api, address = fake
    fake_api.rate_limit_per_minute = 100
    settings = make_settings(tmp_path, **FRESHDESK, freshdesk_base_url=f"http://{address}")
    web, worker = Services(settings, clock=clock), Services(settings, clock=clock)  # two processes, one database
    health = create_app(services=web).test_client()
    fake_api.api_key = "the-new-key"  # an admin regenerated the agent's key in Freshdesk
    with pytest.raises(PlatformError) as refused:
        worker.platforms["freshdesk"].list_groups()
    assert refused.value.status == 401
    seen = health.get("/health").json
    assert seen["platforms"]["freshdesk"]["status"] == "auth_failing"
    assert seen["attention"] == ["freshdesk: the helpdesk refuses our credentials (the admin UI and `deskroute "
                                 "doctor` say why)"]
    scraped = health.get("/metrics").get_data(as_text=True)
    assert 'deskroute_helpdesk_auth_failing{platform="freshdesk"} 1.0' in scraped
    status = web.platforms["freshdesk"].auth_status()
    assert status["status"] == "auth_failing" and "FRESHDESK_API_KEY" in status["error"]
    assert "fd-key" not in str(status) and "the-new-key" not in str(status)
    fake_api.api_key = "fd-key"  # put back (or the setting updated and the worker restarted)
    worker.platforms["freshdesk"].list_groups()
    assert health.get("/health").json["platforms"]["freshdesk"]["status"] == "ok"
    assert web.platforms["freshdesk"].auth_status() == {"auth": "api_key", "status": "ok"}


@pytest.mark.parametrize(("named", "refused"), [
    (("cf_deskroute_category",), ["cf_deskroute_category"]),
    (("custom_fields.cf_deskroute_category",), ["cf_deskroute_category"]),  # a path before the name
    (("deskroute_tier",), ["cf_deskroute_tier"]),  # the name without its cf_
    (("custom_fields",), ["cf_deskroute_category", "cf_deskroute_tier"]),
    (("group_id",), []),  # the group, not a field: sending it without fields won't help
    (("group_id", "cf_other_teams_field"), None),  # a field we didn't send by that name: the fields may be why
])
def test_which_of_our_fields_a_refusal_names(named: tuple[str, ...], refused: list[str] | None) -> None:
    from platforms.freshdesk import _refused_fields

    ours = {"cf_deskroute_category": "billing", "cf_deskroute_tier": "local"}
    assert _refused_fields(named, ours) == refused


def test_a_refusal_is_news_once_even_while_the_database_is_away() -> None:
    """With the database away the note can't be written: the log still says it once, not at every call."""
    from platforms.base import AuthNote

    class Away:
        def record_error(self, error: str | None) -> None:
            raise OSError("database unreachable")

        def error(self) -> str | None:
            raise OSError("database unreachable")

    note = AuthNote(Away(), now=lambda: 0.0)
    assert [note.refused("refused") for _ in range(3)] == [True, False, False]
    note.got_in()  # a call got in: the next refusal is news again
    assert note.refused("refused")
