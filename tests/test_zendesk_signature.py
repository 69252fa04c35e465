"""Zendesk webhook signatures: the published test vector, tampering, and the time window."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from helpers import FIXTURES, SECRET, FakeClock, signed_headers, trigger_body, zendesk_platform
from platforms.base import Unauthorized
from platforms.zendesk import SIGNATURE_HEADER, TIMESTAMP_HEADER, ZendeskPlatform, sign

VECTOR = json.loads((FIXTURES / "zendesk" / "signature_test_vector.json").read_text())
VECTOR_BODY = (FIXTURES / "zendesk" / VECTOR["body_file"].removeprefix("zendesk_")).read_bytes()


def platform(now: datetime, secret: str = SECRET) -> ZendeskPlatform:
    return zendesk_platform(webhook_secret=secret, now=lambda: now)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_published_vector_verifies() -> None:
    assert len(VECTOR_BODY) == VECTOR["body_len_bytes"]
    assert sign(VECTOR["secret"], VECTOR["header_X-Zendesk-Webhook-Signature-Timestamp"], VECTOR_BODY) == \
        VECTOR["expected_X-Zendesk-Webhook-Signature"]
    # The vector's timestamp is "1234" (epoch seconds); verify with a clock inside its window.
    at = datetime.fromtimestamp(1234 + 60, UTC)
    headers = {SIGNATURE_HEADER: VECTOR["expected_X-Zendesk-Webhook-Signature"],
               TIMESTAMP_HEADER: VECTOR["header_X-Zendesk-Webhook-Signature-Timestamp"]}
    platform(at, VECTOR["secret"]).verify(headers, VECTOR_BODY)


def _flip(text: str, index: int) -> str:
    char = text[index]
    return text[:index] + ("A" if char != "A" else "B") + text[index + 1:]


@pytest.mark.parametrize("what", ["body_first", "body_middle", "body_last", "timestamp", "signature"])
def test_one_changed_byte_is_rejected(what: str) -> None:
    at = datetime.fromtimestamp(1234 + 60, UTC)
    body, timestamp = VECTOR_BODY, VECTOR["header_X-Zendesk-Webhook-Signature-Timestamp"]
    signature = VECTOR["expected_X-Zendesk-Webhook-Signature"]
    if what.startswith("body"):
        i = {"body_first": 0, "body_middle": len(body) // 2, "body_last": len(body) - 1}[what]
        body = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
    elif what == "timestamp":
        timestamp = "1235"
    else:
        signature = _flip(signature, 5)
    with pytest.raises(Unauthorized):
        platform(at, VECTOR["secret"]).verify({SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: timestamp}, body)


def test_secret_is_used_as_text_not_decoded() -> None:
    import base64

    decoded = base64.b64decode(VECTOR["secret"]).decode()
    assert sign(decoded, "1234", VECTOR_BODY) != VECTOR["expected_X-Zendesk-Webhook-Signature"]


@pytest.mark.parametrize(("offset", "accepted"), [
    (0, True), (-299, True), (299, True),      # inside the 5-minute window, either way
    (-301, False),                              # stale: a replay
    (301, False),                               # skewed into the future
])
def test_time_window(offset: int, accepted: bool) -> None:
    clock = FakeClock()
    body = trigger_body(7)
    stamp = (clock.datetime() + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = lower(signed_headers(body, clock, timestamp=stamp))
    p = platform(clock.datetime())
    if accepted:
        p.verify(headers, body)
    else:
        with pytest.raises(Unauthorized):
            p.verify(headers, body)


@pytest.mark.parametrize("headers", [
    {},
    {TIMESTAMP_HEADER: "2026-11-22T10:00:00Z"},
    {SIGNATURE_HEADER: "abc"},
    {SIGNATURE_HEADER: "", TIMESTAMP_HEADER: ""},
])
def test_missing_headers_are_rejected(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized):
        platform(datetime.now(UTC)).verify(headers, b"{}")


def test_unreadable_timestamp_is_rejected_even_with_a_valid_signature() -> None:
    body = trigger_body(7)
    headers = {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: sign(SECRET, "yesterday", body)}
    with pytest.raises(Unauthorized):
        platform(datetime.now(UTC)).verify(headers, body)


def test_wrong_secret_is_rejected() -> None:
    clock = FakeClock()
    body = trigger_body(7)
    with pytest.raises(Unauthorized):
        platform(clock.datetime()).verify(lower(signed_headers(body, clock, secret="other")), body)
