"""Fuzzing both webhook endpoints: whatever arrives, no 5xx, no crash, nothing queued that isn't an event.

CI runs a bounded number of examples; DESKROUTE_FUZZ_EXAMPLES=5000 runs a longer campaign.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import create_app
from connector.classify.local import LocalModel
from connector.feedback import save_model
from connector.services import Services
from helpers import SECRET, FakeClock, make_settings
from platforms.freshdesk import FreshdeskPlatform
from platforms.zendesk import ZendeskPlatform, sign

EXAMPLES = int(os.environ.get("DESKROUTE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ALLOWED = {200, 202, 400, 401, 404, 413}
KINDS = {"ticket.created", "ticket.group_changed"}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
ticket_ids = (st.integers(min_value=-5, max_value=10**20) | st.text(max_size=30) | st.none() | st.floats()
              | st.just("{{ticket.id}}") | st.just("12\u0000") | st.just("٣٤"))
events = st.sampled_from(["ticket.created", "ticket.group_changed", "ticket.deleted", "", "TICKET.CREATED",
                          "zen:event-type:ticket.created"]) | st.text(max_size=30)
shaped = st.fixed_dictionaries({"ticket_id": ticket_ids, "event": events},
                               optional={"detail": json_values, "id": json_values, "type": events,
                                         "group_id": json_values, "subject": st.text(max_size=2000)})
envelopes = st.fixed_dictionaries({
    "type": events, "id": st.text(max_size=20) | st.integers(),
    "detail": st.fixed_dictionaries({"id": ticket_ids}, optional={"group_id": json_values}),
    "event": json_values})


def bodies() -> st.SearchStrategy[bytes]:
    as_json = (shaped | envelopes | json_values).map(lambda v: json.dumps(v, allow_nan=True).encode())
    return (st.binary(max_size=512) | as_json | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
            | st.just(b"{" * 5000) | st.just(b'{"ticket_id": "' + b"9" * 100_000 + b'"}'))


@pytest.fixture
def app_services(tmp_path: Path, taxonomy_model: LocalModel) -> tuple[Any, Services, FakeClock]:
    clock = FakeClock()
    freshdesk = {"freshdesk_domain": "acme", "freshdesk_api_key": "fd-key", "freshdesk_webhook_secret": SECRET}
    settings_ = make_settings(tmp_path, **freshdesk)
    platforms = {"zendesk": ZendeskPlatform.from_settings(settings_, now=clock.datetime, sleep=lambda s: None),
                 "freshdesk": FreshdeskPlatform.from_settings(settings_, now=clock.datetime, sleep=lambda s: None)}
    services = Services(settings_, platforms=platforms, clock=clock)
    save_model(services.store, taxonomy_model, source="tests", activate=True)
    return create_app(services=services).test_client(), services, clock


def case_variants(headers: dict[str, str], style: int) -> dict[str, str]:
    change = [str.lower, str.upper, str.title, lambda s: s][style % 4]
    return {change(k): v for k, v in headers.items()}


def signed(platform: str, body: bytes, clock: FakeClock, timestamp: str | None = None) -> dict[str, str]:
    if platform == "freshdesk":
        return {"Content-Type": "application/json", "X-Deskroute-Token": SECRET}
    timestamp = timestamp or clock.iso()
    return {"Content-Type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
            "X-Zendesk-Webhook-Signature": sign(SECRET, timestamp, body)}


def check_queue(services: Services) -> None:
    """Whatever was queued is a well-formed event for a real ticket id."""
    for row in services.store.db.execute("SELECT platform, kind, ticket_id FROM events"):
        assert row["platform"] in ("zendesk", "freshdesk")
        assert row["kind"] in KINDS, row["kind"]
        assert re.fullmatch(r"[1-9][0-9]{0,19}", row["ticket_id"]), row["ticket_id"]


@FUZZ
@given(body=bodies(), platform=st.sampled_from(["zendesk", "freshdesk"]), style=st.integers(0, 3),
       sign_it=st.booleans())
def test_any_body_gets_a_defined_answer(app_services: tuple[Any, Services, FakeClock], body: bytes, platform: str,
                                        style: int, sign_it: bool) -> None:
    client, services, clock = app_services
    before = services.store.db.execute("SELECT count(*) FROM events").fetchone()[0]
    headers = signed(platform, body, clock) if sign_it else {"Content-Type": "application/json"}
    response = client.post(f"/webhooks/{platform}", data=body, headers=case_variants(headers, style))
    assert response.status_code in ALLOWED, (response.status_code, response.get_data()[:200])
    assert response.is_json
    after = services.store.db.execute("SELECT count(*) FROM events").fetchone()[0]
    if not sign_it:
        assert response.status_code == 401 and after == before  # unsigned: nothing queued, whatever it says
    if response.status_code != 202:
        assert after == before
    check_queue(services)


@FUZZ
@given(body=bodies(), skew=st.sampled_from([-86_400, -301, 301, 3_600, 10**9]),
       header_timestamp=st.sampled_from([None, "", "yesterday", "9" * 40, "-1", "2026-13-45T99:99:99Z"]))
def test_replayed_or_skewed_signatures_are_refused(app_services: tuple[Any, Services, FakeClock], body: bytes,
                                                   skew: int, header_timestamp: str | None) -> None:
    client, services, clock = app_services
    stale = FakeClock(clock() + skew)
    headers = signed("zendesk", body, stale, timestamp=header_timestamp)
    response = client.post("/webhooks/zendesk", data=body, headers=headers)
    assert response.status_code == 401
    assert services.store.db.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_a_valid_signature_replayed_later_is_refused(app_services: tuple[Any, Services, FakeClock]) -> None:
    client, services, clock = app_services
    body = json.dumps({"ticket_id": "77", "event": "ticket.created"}).encode()
    headers = signed("zendesk", body, clock)
    assert client.post("/webhooks/zendesk", data=body, headers=headers).status_code == 202
    assert client.post("/webhooks/zendesk", data=body, headers=headers).status_code == 200  # duplicate, not twice
    clock.advance(301)
    assert client.post("/webhooks/zendesk", data=body, headers=headers).status_code == 401
    assert services.store.db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
