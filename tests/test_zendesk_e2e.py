"""End to end through the real zenpy client: webhook -> queue -> worker -> one PUT to Zendesk."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import responses

from connector.models import ROUTED_TAG
from connector.services import Services
from helpers import (
    BILLING_GROUP,
    FIXTURES,
    SECRET,
    ZENDESK,
    FakeClock,
    drain,
    put_bodies,
    signed_headers,
    trigger_body,
    zendesk_ticket,
)
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET

SUBJECT = "Charged twice this month"
DESCRIPTION = "Hello, my card statement shows two charges of $49 on the 3rd. Can you look into it? Jo Bloggs"
UPDATE_RESPONSE = json.loads((FIXTURES / "zendesk" / "ticket_update_response_200.json").read_text())


def post(client: Any, body: bytes, clock: FakeClock, **headers: str) -> Any:
    return client.post("/webhooks/zendesk", data=body, headers=signed_headers(body, clock, extra=headers))


def envelope(ticket_id: int, event_type: str, event_id: str, **event: Any) -> bytes:
    return json.dumps({
        "type": f"zen:event-type:{event_type}", "account_id": 1, "id": event_id, "subject": f"zen:ticket:{ticket_id}",
        "time": "2026-11-22T09:00:00Z", "zendesk_event_version": "2022-11-06",
        "detail": {"id": str(ticket_id), "subject": SUBJECT, "description": DESCRIPTION, "actor_id": "555"},
        "event": event,
    }, indent=3).encode()


@pytest.fixture
def classify_calls(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts classifications (the texts are kept only to check they were the ticket's)."""
    calls: list[str] = []
    original = services.router.classify

    def spy(text: str, *more: Any) -> Any:
        calls.append(text)
        return original(text, *more)

    monkeypatch.setattr(services.router, "classify", spy)
    return calls


def stub_ticket(api: responses.RequestsMock, ticket_id: int, tags: list[str]) -> None:
    api.get(f"{ZENDESK}/tickets/{ticket_id}.json",
            json=zendesk_ticket(ticket_id, subject=SUBJECT, description=DESCRIPTION, tags=tags))
    api.put(f"{ZENDESK}/tickets/{ticket_id}.json", json=UPDATE_RESPONSE)


def test_created_ticket_is_routed_with_one_put(client: Any, services: Services, clock: FakeClock,
                                               zendesk_api: responses.RequestsMock, classify_calls: list[str]) -> None:
    stub_ticket(zendesk_api, 101, tags=["vip", "from_email"])
    response = post(client, trigger_body(101), clock)
    assert response.status_code == 202 and response.json["status"] == "queued"
    assert len(zendesk_api.calls) == 0  # the handler never calls the helpdesk

    assert drain(services) == 1
    [put] = put_bodies(zendesk_api, 101)
    assert put["group_id"] == BILLING_GROUP
    assert put["priority"] == "normal"
    assert put["tags"][:2] == ["vip", "from_email"]  # the agent's tags first, all kept
    assert {"billing", "deskroute_billing", ROUTED_TAG, "deskroute_tier_rules"} <= set(put["tags"])
    assert put["comment"]["public"] is False
    assert "billing" in put["comment"]["body"] and "tier: rules" in put["comment"]["body"]
    assert put["safe_update"] is True and put["updated_stamp"] == "2026-11-22T09:00:00Z"
    [token] = [json.loads(c.request.body) for c in zendesk_api.calls if c.request.url.endswith("/oauth/tokens")]
    assert token == {"grant_type": "client_credentials", "client_id": OAUTH_CLIENT_ID,
                     "client_secret": OAUTH_CLIENT_SECRET, "scope": "read write", "expires_in": 1800}
    api_calls = [c for c in zendesk_api.calls if "/api/v2/" in c.request.url]
    assert {c.request.headers["Authorization"] for c in api_calls} == {"Bearer access-token-1"}
    assert classify_calls == [f"{SUBJECT}\n{DESCRIPTION}"]

    record = services.store.tickets.get("zendesk", "101")
    assert record is not None and record.state == "done" and record.decision is not None
    assert record.decision.category == "billing"


def test_redeliveries_and_updates_never_classify_or_write_again(
        client: Any, services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock,
        classify_calls: list[str]) -> None:
    stub_ticket(zendesk_api, 102, tags=[])
    created = envelope(102, "ticket.created", "11111111-1111-1111-1111-111111111111")
    assert post(client, created, clock).status_code == 202
    drain(services)

    statuses = []
    for _ in range(5):  # Zendesk re-delivers: same event, fresh signature timestamps
        clock.advance(7)
        statuses.append(post(client, created, clock).status_code)
    clock.advance(1)
    # The same ticket.created from the trigger route, with its own invocation id.
    statuses.append(post(client, trigger_body(102), clock, **{"X-Zendesk-Webhook-Invocation-Id": "inv-9"}).status_code)
    # Our own write changed the group: Zendesk reports it. And an unrelated update from a trigger.
    changed = envelope(102, "ticket.group_assignment_changed", "22222222-2222-2222-2222-222222222222",
                       current=BILLING_GROUP, previous=None)
    statuses.append(post(client, changed, clock).status_code)
    statuses.append(post(client, trigger_body(102, "ticket.updated"), clock).status_code)
    assert statuses == [200] * 6 + [202, 200]
    drain(services)

    assert len(put_bodies(zendesk_api, 102)) == 1
    assert len(classify_calls) == 1
    assert services.store.tickets.group_changes("zendesk", "102")[0]["group_id"] == str(BILLING_GROUP)


def test_two_events_for_one_ticket_racing_in_the_queue_classify_once(
        services: Services, zendesk_api: responses.RequestsMock, classify_calls: list[str]) -> None:
    from connector.models import TicketEvent

    stub_ticket(zendesk_api, 103, tags=[])
    # Two distinct created events (say, an old trigger and an event subscription with different keys).
    for key in ("ticket.created:103", "legacy:103"):
        services.queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id="103", dedup_key=key))
    assert drain(services) == 2
    assert len(put_bodies(zendesk_api, 103)) == 1 and len(classify_calls) == 1
    outcomes = sorted(e["outcome"] for e in services.store.events.recent())
    assert outcomes == ["duplicate", "routed"]


def test_logs_carry_ids_but_no_ticket_text_or_secrets(client: Any, services: Services, clock: FakeClock,
                                                      zendesk_api: responses.RequestsMock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stub_ticket(zendesk_api, 104, tags=["vip"])
    post(client, trigger_body(104), clock)
    post(client, b"not json", clock)
    client.post("/webhooks/zendesk", data=trigger_body(104), headers={"X-Zendesk-Webhook-Signature": "x"})
    drain(services)
    assert len(put_bodies(zendesk_api, 104)) == 1

    dumped = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "104" in dumped  # ids are logged
    for secret_or_text in (SECRET, "api-token-not-real", SUBJECT, "two charges", "Jo Bloggs"):
        assert secret_or_text not in dumped


def test_shadow_mode_classifies_and_records_but_never_writes(
        make_services: Any, clock: FakeClock, zendesk_api: responses.RequestsMock) -> None:
    from connector import create_app

    services = make_services(deskroute_shadow=True)
    client = create_app(services=services).test_client()
    stub_ticket(zendesk_api, 105, tags=[])
    assert post(client, trigger_body(105), clock).status_code == 202
    drain(services)
    assert put_bodies(zendesk_api, 105) == []
    record = services.store.tickets.get("zendesk", "105")
    assert record is not None and record.state == "shadow" and record.decision is not None
    assert record.decision.category == "billing"
    assert services.store.events.recent()[0]["outcome"] == "shadow"
    assert client.get("/health").json["shadow"] is True
