"""Fuzzing both webhook endpoints: whatever arrives, no 5xx, no crash, nothing queued that isn't an event.

CI runs a bounded number of examples; DESKROUTE_FUZZ_EXAMPLES=20000 runs a longer campaign, and
--hypothesis-show-statistics shows how the answers were spread.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from connector import create_app
from connector.classify.local import LocalModel
from connector.feedback import save_model
from connector.services import Services
from helpers import SECRET, FakeClock, make_settings, signed_headers
from platforms.freshdesk import TOKEN_HEADER_NAME, FreshdeskPlatform
from platforms.zendesk import ZendeskPlatform

EXAMPLES = int(os.environ.get("DESKROUTE_FUZZ_EXAMPLES", "150"))
# CI sees the same 150 examples every run; a longer campaign explores afresh (pin it with --hypothesis-seed).
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="DESKROUTE_FUZZ_EXAMPLES" not in os.environ,
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
# Nearly right: a real event with an id that is valid or only just not (zeros, spaces, signs, digits that
# aren't ASCII), so that a good share of examples is queued and the queue check has something to check.
near_ids = (st.integers(min_value=1, max_value=10**19) | st.from_regex(r"\A[ 0+-]?0*[0-9]{1,21}\s?\Z")
            | st.from_regex(r"\A[0-9\u0660-\u0669\uff10-\uff19]{1,6}\Z"))
nearly_valid = (st.fixed_dictionaries({"ticket_id": near_ids, "event": st.sampled_from(sorted(KINDS))},
                                      optional={"group_id": near_ids | json_values, "previous_group_id": near_ids,
                                                "actor_id": near_ids, "via": json_values})
                | st.fixed_dictionaries({"type": st.sampled_from(["zen:event-type:ticket.created",
                                                                  "zen:event-type:ticket.group_assignment_changed"]),
                                         "id": st.text(max_size=20),
                                         "detail": st.fixed_dictionaries({"id": near_ids},
                                                                         optional={"group_id": near_ids})},
                                        optional={"event": st.fixed_dictionaries({"current": near_ids,
                                                                                  "previous": near_ids}),
                                                  "time": st.text(max_size=30), "subject": st.text(max_size=40)}))
envelopes = st.fixed_dictionaries({
    "type": events, "id": st.text(max_size=20) | st.integers(),
    "detail": st.fixed_dictionaries({"id": ticket_ids}, optional={"group_id": json_values}),
    "event": json_values})


def bodies() -> st.SearchStrategy[bytes]:
    def dumped(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
        return values.map(lambda v: json.dumps(v, allow_nan=True).encode())
    return (dumped(nearly_valid) | st.binary(max_size=512) | dumped(shaped | envelopes | json_values)
            | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
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
        return {"Content-Type": "application/json", TOKEN_HEADER_NAME: SECRET}
    return signed_headers(body, clock, timestamp=timestamp)


def check_queue(services: Services, after_rowid: int) -> None:
    """Whatever this example queued is a well-formed event for a ticket id in its one spelling."""
    for row in services.store.db.execute("SELECT platform, kind, ticket_id FROM events WHERE id > :after",
                                         {"after": after_rowid}):
        assert row["platform"] in ("zendesk", "freshdesk")
        assert row["kind"] in KINDS, row["kind"]
        assert re.fullmatch(r"[1-9][0-9]{0,18}", row["ticket_id"]), row["ticket_id"]
        assert int(row["ticket_id"]) < 2**63


@FUZZ
@given(body=bodies(), platform=st.sampled_from(["zendesk", "freshdesk"]), style=st.integers(0, 3),
       sign_it=st.sampled_from([True, True, False]))  # mostly signed: unsigned all end at the same 401
def test_any_body_gets_a_defined_answer(app_services: tuple[Any, Services, FakeClock], body: bytes, platform: str,
                                        style: int, sign_it: bool) -> None:
    client, services, clock = app_services
    first = services.store.db.execute("SELECT count(*) AS n, coalesce(max(id), 0) AS last FROM events")[0]
    before, last_rowid = first["n"], first["last"]
    headers = signed(platform, body, clock) if sign_it else {"Content-Type": "application/json"}
    response = client.post(f"/webhooks/{platform}", data=body, headers=case_variants(headers, style))
    event(f"{platform} {'signed' if sign_it else 'unsigned'} {response.status_code}")  # --hypothesis-show-statistics
    assert response.status_code in ALLOWED, (response.status_code, response.get_data()[:200])
    assert response.is_json
    after = services.store.db.execute("SELECT count(*) AS n FROM events")[0]["n"]
    if not sign_it:
        assert response.status_code == 401 and after == before  # unsigned: nothing queued, whatever it says
    assert after == before + (response.status_code == 202)  # one event per acceptance, none otherwise
    check_queue(services, last_rowid)


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
    assert services.store.db.execute("SELECT count(*) AS n FROM events")[0]["n"] == 0


def test_a_valid_signature_replayed_later_is_refused(app_services: tuple[Any, Services, FakeClock]) -> None:
    client, services, clock = app_services
    body = json.dumps({"ticket_id": "77", "event": "ticket.created"}).encode()
    headers = signed("zendesk", body, clock)
    assert client.post("/webhooks/zendesk", data=body, headers=headers).status_code == 202
    assert client.post("/webhooks/zendesk", data=body, headers=headers).status_code == 200  # duplicate, not twice
    clock.advance(301)
    assert client.post("/webhooks/zendesk", data=body, headers=headers).status_code == 401
    assert services.store.db.execute("SELECT count(*) AS n FROM events")[0]["n"] == 1
