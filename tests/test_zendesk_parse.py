"""Zendesk payloads: event-subscription envelopes and our triggers' bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.models import Ignored, TicketEvent
from helpers import FIXTURES, zendesk_platform
from platforms.base import BadPayload
from platforms.zendesk import INVOCATION_HEADER, TIMESTAMP_HEADER

ZD = zendesk_platform()


def parse(payload: Any, headers: dict[str, str] | None = None) -> TicketEvent | Ignored:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return ZD.parse(headers or {}, body)


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "zendesk" / name).read_text())


def test_ticket_created_envelope() -> None:
    event = parse(fixture("event_ticket_created_example_thirdparty.json"))
    assert isinstance(event, TicketEvent)
    assert (event.kind, event.ticket_id, event.dedup_key) == ("ticket.created", "5158", "ticket.created:5158")
    assert event.source_id == "cbe4028c-7239-495d-b020-f22348516046"
    assert event.occurred_at is not None and event.occurred_at.year == 2025  # nanoseconds trimmed, not refused
    assert event.via == "web_service"


def test_ticket_id_falls_back_to_the_envelope_subject() -> None:
    payload = fixture("event_ticket_created_example_thirdparty.json")
    del payload["detail"]
    event = parse(payload)
    assert isinstance(event, TicketEvent) and event.ticket_id == "5158"


@pytest.mark.parametrize(("current", "previous"), [
    ("8447320466431", "8447320466430"),   # strings, as in the documented detail fields
    (8447320466431, 8447320466430),       # numbers, as in the assignment-changed example
    ({"id": "8447320466431"}, {"id": 8447320466430}),
])
def test_group_changed_envelope(current: Any, previous: Any) -> None:
    payload = fixture("event_ticket_agent_assignment_changed_example_thirdparty.json")
    payload.update(type="zen:event-type:ticket.group_assignment_changed", event={"current": current,
                                                                                  "previous": previous})
    payload["detail"]["actor_id"] = "900"
    event = parse(payload)
    assert isinstance(event, TicketEvent)
    assert event.kind == "ticket.group_changed"
    assert (event.group_id, event.previous_group_id, event.actor_id) == ("8447320466431", "8447320466430", "900")
    assert event.dedup_key == f"event:{payload['id']}"


@pytest.mark.parametrize("name", ["event_ticket_agent_assignment_changed_example_thirdparty.json",
                                  "event_user_deleted_payload.json"])
def test_other_event_types_are_ignored(name: str) -> None:
    result = parse(fixture(name))
    assert isinstance(result, Ignored) and "is not used" in result.reason


def test_real_envelope_bytes_parse() -> None:
    # Exactly as Zendesk sent it: 3-space indentation and a trailing newline.
    body = (FIXTURES / "zendesk" / "event_user_deleted_payload.json").read_bytes()
    assert isinstance(ZD.parse({}, body), Ignored)


@pytest.mark.parametrize("event", ["ticket.created", "created"])
def test_trigger_created_body(event: str) -> None:
    result = parse({"ticket_id": "42", "event": event}, {INVOCATION_HEADER: "01HANA2B5D5W9XSJS3NE5SQA1J"})
    assert isinstance(result, TicketEvent)
    assert (result.kind, result.ticket_id, result.dedup_key) == ("ticket.created", "42", "ticket.created:42")
    assert result.source_id == "01HANA2B5D5W9XSJS3NE5SQA1J"


def test_trigger_body_with_numeric_id_and_no_event_means_created() -> None:
    result = parse({"ticket_id": 42})
    assert isinstance(result, TicketEvent) and result.kind == "ticket.created"


def test_trigger_group_changed_dedups_on_what_is_signed_not_on_the_invocation_id() -> None:
    body = {"ticket_id": "42", "event": "ticket.group_changed", "group_id": "77", "actor_id": "9"}
    stamp = {TIMESTAMP_HEADER: "2026-11-22T09:00:00Z"}
    first = parse(body, {**stamp, INVOCATION_HEADER: "inv-1"})
    replayed = parse(body, {**stamp, INVOCATION_HEADER: "inv-2"})  # a captured delivery, new unsigned id
    later = parse(body, {TIMESTAMP_HEADER: "2026-11-22T09:03:00Z", INVOCATION_HEADER: "inv-3"})  # moved back later
    other = parse({**body, "group_id": "78"}, stamp)
    assert isinstance(first, TicketEvent) and isinstance(replayed, TicketEvent)
    assert isinstance(later, TicketEvent) and isinstance(other, TicketEvent)
    assert first.dedup_key == replayed.dedup_key
    assert len({first.dedup_key, later.dedup_key, other.dedup_key}) == 3
    assert (first.kind, first.group_id, first.actor_id) == ("ticket.group_changed", "77", "9")


@pytest.mark.parametrize("event", ["ticket.updated", "ticket.solved", "comment_added"])
def test_trigger_other_events_are_ignored(event: str) -> None:
    assert isinstance(parse({"ticket_id": "42", "event": event}), Ignored)


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"ticket"', "JSON object"),
    (b"{}", "ticket_id is missing"),
    (b'{"ticket_id": null}', "ticket_id is missing"),
    (b'{"ticket_id": "abc"}', "positive integer"),
    (b'{"ticket_id": "-5"}', "positive integer"),
    (b'{"ticket_id": "0"}', "positive integer"),
    (b'{"ticket_id": true}', "ticket_id is missing"),
    (b'{"ticket_id": "{{ticket.id}}"}', "positive integer"),   # placeholder never filled in
    (b'{"ticket_id": "1", "event": 5}', "event must be a string"),
    (b'{"type": "zen:event-type:ticket.created", "detail": {}}', "ticket_id is missing"),
])
def test_bad_payloads(body: bytes, message: str) -> None:
    with pytest.raises(BadPayload, match=message):
        ZD.parse({}, body)
