"""Write-back under faults: rate limits, server errors, refusals, conflicts and crashed workers."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests
import responses

from connector.models import ROUTED_TAG, TRIAGE_TAG, TicketEvent
from connector.services import Services
from helpers import (
    BILLING_GROUP,
    FIXTURES,
    TRIAGE_GROUP,
    ZENDESK,
    FakeClock,
    drain,
    put_bodies,
    zendesk_ticket,
)

TICKET = 201
URL = f"{ZENDESK}/tickets/{TICKET}.json"
UPDATED = json.loads((FIXTURES / "zendesk" / "ticket_update_response_200.json").read_text())


def queue_created(services: Services) -> int:
    event_id, _ = services.queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.created",
                                                     ticket_id=str(TICKET), dedup_key=f"ticket.created:{TICKET}"))
    return event_id


# The ticket after our billing write landed: our group, and the ticket's tags plus ours.
ROUTED = {"group_id": BILLING_GROUP, "tags": ["vip", ROUTED_TAG, "billing", "deskroute_billing",
                                              "deskroute_tier_rules", "deskroute_conf_high"]}


def stub_get(api: responses.RequestsMock, *, tags: list[str] | None = None, updated_at: str = "2026-11-22T09:00:00Z",
             subject: str = "Invoice for October missing", group_id: int | None = None) -> None:
    api.get(URL, json=zendesk_ticket(TICKET, subject=subject, description="Please resend it.", tags=tags or ["vip"],
                                     updated_at=updated_at, group_id=group_id))


def stub_put(api: responses.RequestsMock, status: int = 200, *, retry_after: str | None = None,
             body: Any = None) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    if status == 200:
        api.put(URL, json=UPDATED)
    else:
        api.put(URL, status=status, headers=headers, json=body if body is not None else {"error": "Error"})


def event_row(services: Services, event_id: int) -> dict[str, Any]:
    return services.store.events.get(event_id)


def test_429_with_retry_after_then_success(services: Services, zendesk_api: responses.RequestsMock) -> None:
    stub_get(zendesk_api)
    stub_put(zendesk_api, 429, retry_after="2")
    stub_put(zendesk_api)
    event_id = queue_created(services)
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 2
    assert services.sleeps == [2.0]  # type: ignore[attr-defined]
    assert event_row(services, event_id)["state"] == "done"


def test_429_longer_than_the_wait_budget_goes_back_to_the_queue(
        services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock) -> None:
    stub_get(zendesk_api)
    stub_put(zendesk_api, 429, retry_after="120")  # the budget is 30 s: don't hold the worker
    stub_put(zendesk_api)
    event_id = queue_created(services)
    drain(services)
    row = event_row(services, event_id)
    assert row["state"] == "pending" and row["due_at"] >= clock() + 120 and "429" in row["last_error"]
    assert services.sleeps == []  # type: ignore[attr-defined]
    clock.advance(121)
    drain(services)
    assert event_row(services, event_id)["state"] == "done"
    assert len(put_bodies(zendesk_api, TICKET)) == 2


def test_503_three_times_then_success(services: Services, zendesk_api: responses.RequestsMock) -> None:
    stub_get(zendesk_api)
    for _ in range(3):
        stub_put(zendesk_api, 503, body={"error": "ServiceUnavailable"})
    stub_put(zendesk_api)
    event_id = queue_created(services)
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 4
    assert len(services.sleeps) == 3  # type: ignore[attr-defined]
    assert event_row(services, event_id)["state"] == "done"


def test_a_helpdesk_that_stays_down_ends_in_a_visible_dead_letter(
        make_services: Callable[..., Services], clock: FakeClock, zendesk_api: responses.RequestsMock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connector.queue")
    services = make_services(deskroute_max_attempts=2)
    stub_get(zendesk_api)
    stub_put(zendesk_api, 503, body="<html>down</html>")
    event_id = queue_created(services)
    for _ in range(3):
        drain(services)
        clock.advance(3600)
    row = event_row(services, event_id)
    assert row["state"] == "dead" and row["attempts"] == 2 and row["last_error"].startswith("503")
    record = services.store.tickets.get("zendesk", str(TICKET))
    assert record is not None and record.state == "dead"  # classified once, never written, given up visibly
    assert [e["id"] for e in services.store.events.recent(state="dead")] == [event_id]
    # At 3 a.m. the log says why, not only which event (the reason is the stored one: no ticket text in it)
    retried, dead = [r for r in caplog.records if r.name == "connector.queue"]
    assert retried.getMessage() == "event retry scheduled" and retried.error.startswith("503")  # type: ignore
    assert dead.getMessage() == "event dead-lettered" and dead.error == row["last_error"]  # type: ignore
    assert dead.platform == "zendesk"  # type: ignore[attr-defined]


def test_422_invalid_group_falls_back_to_triage_with_the_reason(
        services: Services, zendesk_api: responses.RequestsMock) -> None:
    stub_get(zendesk_api)
    stub_put(zendesk_api, 422, body={"error": "RecordInvalid", "description": "Record validation errors",
                                     "details": {"group": [{"description": "Group: is invalid"}]}})
    stub_put(zendesk_api)
    event_id = queue_created(services)
    drain(services)
    first, second = put_bodies(zendesk_api, TICKET)
    assert first["group_id"] == BILLING_GROUP
    assert second["group_id"] == TRIAGE_GROUP
    assert TRIAGE_TAG in second["tags"] and "vip" in second["tags"]
    assert "refused the routing (422 RecordInvalid: group: Group: is invalid)" in second["comment"]["body"]
    assert "Best guess: billing" in second["comment"]["body"]
    row = event_row(services, event_id)
    assert (row["state"], row["outcome"]) == ("triage", "triage")
    record = services.store.tickets.get("zendesk", str(TICKET))
    assert record is not None and record.state == "triage" and record.decision is not None
    assert record.decision.triage


def test_422_on_the_triage_group_too_is_dead_with_the_reason(
        services: Services, zendesk_api: responses.RequestsMock) -> None:
    stub_get(zendesk_api)
    invalid = {"error": "RecordInvalid", "details": {"group": [{"description": "Group: is invalid"}]}}
    stub_put(zendesk_api, 422, body=invalid)
    event_id = queue_created(services)
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 2  # the category's group, then triage; then stop
    row = event_row(services, event_id)
    assert row["state"] == "dead" and "422 RecordInvalid" in row["last_error"]
    record = services.store.tickets.get("zendesk", str(TICKET))
    assert record is not None and record.state == "dead"


FIXED_GROUP = "360000000105"


def move_billing(services: Services, clock: FakeClock, group: str) -> None:
    """An admin moves billing to another Zendesk group (say, fixing a refused one)."""
    from test_config_store import billing_edit

    from connector.config import save_category

    save_category(services.mappings_dir, services.store, billing_edit(services, group=group), author="admin",
                  now=clock())
    services.reload_config(force=True)


def reads_as(api: responses.RequestsMock, *, tags: list[str], group_id: int, status: str = "open",
             assignee_id: int | None = None) -> None:
    """From now on the ticket reads with these tags, in this group (after our write, or people's)."""
    api.replace(responses.GET, URL, json=zendesk_ticket(
        TICKET, subject="Invoice for October missing", description="Please resend it.", tags=tags,
        updated_at="2026-11-22T09:00:01Z", group_id=group_id, status=status, assignee_id=assignee_id))


def test_a_dead_letter_retried_after_the_admin_fixed_the_group_is_written_to_the_fixed_group(
        services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock) -> None:
    """Retry once sent the refused group again and died again; the one classification is mapped anew."""
    stub_get(zendesk_api)
    invalid = {"error": "RecordInvalid", "details": {"group": [{"description": "Group: is invalid"}]}}
    stub_put(zendesk_api, 422, body=invalid)
    event_id = queue_created(services)
    drain(services)
    assert event_row(services, event_id)["state"] == "dead"
    before = services.store.tickets.get("zendesk", str(TICKET))
    assert before is not None and before.classification is not None

    move_billing(services, clock, FIXED_GROUP)
    zendesk_api.replace(responses.PUT, URL, json=UPDATED)
    assert services.store.events.requeue(event_id, now=clock())
    drain(services)
    assert put_bodies(zendesk_api, TICKET)[-1]["group_id"] == 360000000105
    assert event_row(services, event_id)["state"] == "done"
    after = services.store.tickets.get("zendesk", str(TICKET))
    assert after is not None and after.state == "done" and after.decision is not None
    assert after.decision.group_id == "360000000105" and after.classification == before.classification  # not again


def test_a_retry_after_a_mapping_edit_never_writes_a_ticket_twice(
        services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock) -> None:
    """What landed stays: the retried ticket already shows our routing, so nothing is written again."""
    stub_get(zendesk_api)
    stub_put(zendesk_api)
    event_id = queue_created(services)
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 1 and event_row(services, event_id)["state"] == "done"
    move_billing(services, clock, FIXED_GROUP)
    reads_as(zendesk_api, tags=ROUTED["tags"], group_id=BILLING_GROUP)  # the ticket as our write left it
    assert services.store.events.requeue(event_id, now=clock())
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 1
    record = services.store.tickets.get("zendesk", str(TICKET))
    assert record is not None and record.decision is not None and record.decision.group_id == str(BILLING_GROUP)


def test_a_retry_leaves_a_ticket_people_moved_since_our_routing_landed(
        services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock) -> None:
    """An agent re-routed it after us: a retry (by hand, or after a 409) must not move it back."""
    stub_get(zendesk_api)
    stub_put(zendesk_api)
    event_id = queue_created(services)
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 1
    reads_as(zendesk_api, tags=ROUTED["tags"], group_id=360000000103)  # an agent's move
    assert services.store.events.requeue(event_id, now=clock())
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 1  # nothing written again
    row = event_row(services, event_id)
    assert (row["state"], row["outcome"]) == ("done", "moved_by_people")


@pytest.mark.parametrize(("moved_meanwhile", "status", "assignee"), [
    (False, "open", None), (True, "open", None), (False, "solved", None), (False, "pending", None),
    (False, "hold", None), (False, "open", 235323)])
def test_a_ticket_parked_in_triage_by_a_refused_group_is_routed_by_a_retry_once_fixed(
        services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock, moved_meanwhile: bool,
        status: str, assignee: int | None) -> None:
    """The usual end of a bad group is a triage fallback, not a dead letter: a retry moves it on once fixed,
    unless people have moved it meanwhile (here: out of triage and back), taken it on (assigned it to an
    agent), answered it (pending, on hold) or solved it where it was: their say is the last."""
    stub_get(zendesk_api)
    stub_put(zendesk_api, 422, body={"error": "RecordInvalid", "details": {"group": [{"description": "invalid"}]}})
    stub_put(zendesk_api)
    event_id = queue_created(services)
    drain(services)
    assert event_row(services, event_id)["state"] == "triage"
    [row] = services.store.stats.recent_tickets()  # what `deskroute tickets list` shows, with "error: ..."
    assert row["state"] == "triage" and "422 RecordInvalid" in row["last_error"]
    move_billing(services, clock, FIXED_GROUP)
    parked = put_bodies(zendesk_api, TICKET)[-1]
    reads_as(zendesk_api, tags=parked["tags"], group_id=TRIAGE_GROUP, status=status, assignee_id=assignee)
    if moved_meanwhile:  # the reconciler recorded an agent's moves
        services.store.corrections.add({
            "platform": "zendesk", "ticket_id": str(TICKET), "change_id": "c1", "seq": 1, "text": "x",
            "predicted_category": "billing", "predicted_group_id": str(TRIAGE_GROUP), "predicted_tier": "rules",
            "predicted_confidence": 0.95, "previous_group_id": str(TRIAGE_GROUP), "corrected_group_id": "360000000103",
            "corrected_category": "bug_report", "routed_at": clock(), "rerouted_at": clock(), "status": "pending",
            "created_at": clock()})
    writes = len(put_bodies(zendesk_api, TICKET))
    assert services.store.events.requeue(event_id, now=clock())
    drain(services)
    if moved_meanwhile or status != "open" or assignee:
        assert len(put_bodies(zendesk_api, TICKET)) == writes and event_row(services, event_id)["state"] == "triage"
    else:
        moved_on = put_bodies(zendesk_api, TICKET)[-1]
        assert moved_on["group_id"] == 360000000105
        assert event_row(services, event_id)["state"] == "done"
        # Our triage tags go with the triage routing (views built on them must not keep it); ours and the
        # agent's stay.
        assert "deskroute_needs_triage" in parked["tags"] and "deskroute_needs_triage" not in moved_on["tags"]
        assert {"vip", "deskroute_routed", "deskroute_billing"} <= set(moved_on["tags"])



@pytest.mark.parametrize("taken_on", [False, True])
def test_a_retry_that_moves_a_parked_ticket_on_survives_a_409(
        services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock, taken_on: bool) -> None:
    """The retry's write meets an agent's edit (409): re-read, the ticket is still in the triage group our
    fallback put it in, which is no move by people: the write goes again, to the fixed group. Unless the
    edit was an agent taking it on: then it stays, with the decision that is on it."""
    stub_get(zendesk_api)
    stub_put(zendesk_api, 422, body={"error": "RecordInvalid", "details": {"group": [{"description": "invalid"}]}})
    stub_put(zendesk_api)
    event_id = queue_created(services)
    drain(services)
    move_billing(services, clock, FIXED_GROUP)
    parked = put_bodies(zendesk_api, TICKET)[-1]
    reads_as(zendesk_api, tags=parked["tags"], group_id=TRIAGE_GROUP)
    stub_put(zendesk_api, 409, body={"error": "UpdateConflict"})
    stub_put(zendesk_api)
    writes = len(put_bodies(zendesk_api, TICKET))
    original_get = services.platforms["zendesk"].fetch_ticket
    reads: list[int] = []

    def fetch(ticket_id: str) -> Any:  # the re-read after the 409 sees what the agent did
        reads.append(1)
        if taken_on and len(reads) > 1:
            reads_as(zendesk_api, tags=parked["tags"], group_id=TRIAGE_GROUP, assignee_id=235323)
        return original_get(ticket_id)

    services.platforms["zendesk"].fetch_ticket = fetch  # type: ignore[method-assign]
    assert services.store.events.requeue(event_id, now=clock())
    drain(services)
    row = event_row(services, event_id)
    if taken_on:
        assert len(put_bodies(zendesk_api, TICKET)) == writes + 1  # the one refused with 409, nothing after
        assert (row["state"], row["outcome"]) == ("triage", "moved_by_people")
        record = services.store.tickets.get("zendesk", str(TICKET))
        assert record is not None and record.decision is not None and record.decision.triage
    else:
        assert put_bodies(zendesk_api, TICKET)[-1]["group_id"] == 360000000105
        assert (row["state"], row["outcome"]) == ("done", "routed")


def test_409_rereads_the_ticket_and_keeps_the_agents_new_tag(
        services: Services, zendesk_api: responses.RequestsMock) -> None:
    stub_get(zendesk_api, tags=["vip"])
    stub_put(zendesk_api, 409, body={"error": "UpdateConflict"})
    stub_get(zendesk_api, tags=["vip", "added_by_agent"], updated_at="2026-11-22T09:00:05Z")
    stub_put(zendesk_api)
    queue_created(services)
    drain(services)
    first, second = put_bodies(zendesk_api, TICKET)
    assert first["updated_stamp"] == "2026-11-22T09:00:00Z"
    assert second["updated_stamp"] == "2026-11-22T09:00:05Z"
    assert second["tags"][:2] == ["vip", "added_by_agent"]


def test_worker_dying_mid_job_hands_it_over_once_the_lease_expires(
        services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock) -> None:
    stub_get(zendesk_api)
    stub_put(zendesk_api)
    event_id = queue_created(services)
    dead_worker = services.queue.claim("worker-that-dies")
    assert dead_worker is not None
    assert drain(services) == 0  # leased: nobody else may take it yet
    clock.advance(services.settings.deskroute_lease_seconds + 1)
    assert drain(services) == 1
    assert len(put_bodies(zendesk_api, TICKET)) == 1
    row = event_row(services, event_id)
    assert row["state"] == "done" and row["attempts"] == 2
    assert not services.queue.complete(dead_worker, state="done", outcome="routed")  # its late word is refused


class Crash(BaseException):
    """The process dies (SIGKILL): nothing after this point runs, no except clause sees it."""


def test_crash_after_the_write_landed_does_not_write_again(
        services: Services, clock: FakeClock, zendesk_api: responses.RequestsMock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stub_get(zendesk_api, tags=["vip"])
    stub_put(zendesk_api)
    # What Zendesk shows after our write: our tags are on the ticket.
    stub_get(zendesk_api, **ROUTED, updated_at="2026-11-22T09:00:09Z")
    event_id = queue_created(services)

    original = services.store.tickets.finish

    def crash_once(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(services.store.tickets, "finish", original)
        raise Crash

    monkeypatch.setattr(services.store.tickets, "finish", crash_once)
    with pytest.raises(Crash):
        drain(services)
    assert event_row(services, event_id)["state"] == "running"
    clock.advance(services.settings.deskroute_lease_seconds + 1)
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 1
    assert event_row(services, event_id)["state"] == "done"


def test_timeout_whose_write_landed_is_not_repeated(services: Services, zendesk_api: responses.RequestsMock) -> None:
    stub_get(zendesk_api, tags=["vip"])
    zendesk_api.put(URL, body=requests.ConnectionError("read timed out"))  # it reached Zendesk, we never heard
    stub_put(zendesk_api, 409, body={"error": "UpdateConflict"})           # so the retry's stamp is stale
    stub_get(zendesk_api, **ROUTED, updated_at="2026-11-22T09:00:09Z")
    event_id = queue_created(services)
    drain(services)
    assert len(put_bodies(zendesk_api, TICKET)) == 2
    assert event_row(services, event_id)["state"] == "done"


def test_deleted_ticket_is_dead_with_the_reason(services: Services, zendesk_api: responses.RequestsMock) -> None:
    zendesk_api.get(URL, status=404, json={"error": "RecordNotFound", "description": "Not found"})
    event_id = queue_created(services)
    drain(services)
    row = event_row(services, event_id)
    assert row["state"] == "dead" and row["last_error"] == "404 RecordNotFound: Not found"


def test_bad_credentials_are_retried_not_dropped(services: Services, zendesk_api: responses.RequestsMock) -> None:
    zendesk_api.get(URL, status=401, json={"error": "Couldn't authenticate you"})
    event_id = queue_created(services)
    drain(services)
    row = event_row(services, event_id)
    assert row["state"] == "pending" and row["last_error"].startswith("zendesk auth:") and "(401" in row["last_error"]
    # The 401 renewed the token and repeated the call once; then the job waits for an admin, no quick retries.
    urls = [c.request.url for c in zendesk_api.calls]
    assert sum(u.endswith("/oauth/tokens") for u in urls) == 2 and urls.count(URL) == 2


def test_a_retry_after_of_zero_is_waited_as_half_a_second_not_spun_on() -> None:
    from platforms.base import PlatformError, RetryingCaller

    waits: list[float] = []
    attempts: list[int] = []

    def rate_limited() -> None:
        attempts.append(1)
        raise PlatformError("429", retryable=True, status=429, retry_after=0.0)

    with pytest.raises(PlatformError):
        RetryingCaller(max_wait=5.0, sleep=waits.append)("fetch", rate_limited)
    assert len(attempts) <= 11 and all(w >= 0.5 for w in waits)  # bounded by max_wait, not looping forever


def test_a_worker_waits_out_a_database_outage_with_growing_pauses_and_one_log_line(
        services: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from connector.store import StoreUnavailable

    class Stop:
        """Ends the loop once a claim works again; records each pause instead of sleeping it."""

        def __init__(self) -> None:
            self.pauses: list[float] = []
            self.done = False

        def is_set(self) -> bool:
            return self.done

        def wait(self, seconds: float) -> bool:
            self.pauses.append(seconds)
            return False

    stop, failures = Stop(), [StoreUnavailable("connection refused")] * 4
    worker = services.make_worker()

    def run_once() -> bool:
        if failures:
            raise failures.pop()
        stop.done = True
        return True

    monkeypatch.setattr(worker, "run_once", run_once)
    caplog.set_level("INFO")
    worker.run(stop, threading.Event(), poll_seconds=0.25)  # type: ignore[arg-type]
    assert stop.pauses == [1.0, 2.0, 4.0, 8.0]  # growing pauses, not a reconnect storm
    assert [r.getMessage() for r in caplog.records if "database" in r.getMessage()] == [
        "database unavailable; waiting for it", "database reachable again"]
