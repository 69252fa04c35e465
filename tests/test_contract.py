"""The guarantees every helpdesk adapter gives, run against each one's loopback fake.

Classify once; de-duplicate; nothing lost (or written twice) under 429, 5xx, timeouts and crashes;
bad input never a 5xx; a wrong secret gives 401; the agent's tags are kept. The checks are plain
functions so that test_a_broken_adapter_fails_the_contract can show they bite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connector.models import ROUTED_TAG, TRIAGE_TAG, Classification
from helpdesks import DESCRIPTION, EXISTING_TAGS, SUBJECT, Env, Helpdesk, mapped_route
from helpers import drain
from platforms.base import merge_tags

# --- the checks ----------------------------------------------------------------------------------

def check_routes_once_keeping_the_agents_tags(env: Env) -> None:
    assert env.create(11).status_code == 202
    drain(env.services)
    route = mapped_route(env.name, "billing")
    [write] = env.helpdesk.writes(11)
    assert write.group_id == str(route["group_id"])
    assert write.priority == "normal"
    assert write.tags[:2] == EXISTING_TAGS, "the ticket's own tags must be kept, first"
    assert {ROUTED_TAG, "deskroute_billing", *route["tags"]} <= set(write.tags)
    [note] = env.helpdesk.notes(11)
    assert "billing" in note and "confidence" in note and "tier: rules" in note
    assert len(env.classified) == 1


def check_duplicates_and_updates_never_write_again(env: Env) -> None:
    env.create(12)
    drain(env.services)
    statuses = [env.post(*env.helpdesk.created_webhook(12, env.clock)).status_code for _ in range(5)]
    statuses.append(env.post(*env.helpdesk.update_webhook(12, env.clock)).status_code)
    drain(env.services)
    assert statuses == [200] * 5 + [202]
    assert len(env.helpdesk.writes(12)) == 1 and len(env.helpdesk.notes(12)) == 1
    assert len(env.classified) == 1


# --- the contract --------------------------------------------------------------------------------

def test_routes_once_keeping_the_agents_tags(env: Env) -> None:
    check_routes_once_keeping_the_agents_tags(env)


def test_duplicates_and_updates_never_write_again(env: Env) -> None:
    check_duplicates_and_updates_never_write_again(env)


def test_wrong_or_missing_secret_is_401(env: Env) -> None:
    body, _ = env.helpdesk.created_webhook(13, env.clock)
    for headers in env.helpdesk.forged(body, env.clock):
        response = env.post(body, headers)
        assert response.status_code == 401 and response.json == {"error": "invalid request"}
    assert env.events() == []


@pytest.mark.parametrize(("body", "expected"), [
    (b"not json at all", 400),
    (b"[]", 400),
    (b'{"event": "ticket.created"}', 400),
    (b'{"ticket_id": "DROP TABLE", "event": "ticket.created"}', 400),
    (b'{"ticket_id": "5", "event": "ticket.solved"}', 200),
    (b'{"ticket_id": "5", "padding": "' + b"x" * (2 * 1024 * 1024) + b'"}', 413),
    (b"[" * 100_000 + b"]" * 100_000, 400),  # deeper than the JSON parser goes (a RecursionError)
])
def test_bad_input_is_never_a_5xx_and_never_queued(env: Env, body: bytes, expected: int) -> None:
    _, headers = env.helpdesk.created_webhook(5, env.clock)
    if env.name == "zendesk":  # signed bodies: sign this one
        from helpers import signed_headers
        headers = signed_headers(body, env.clock)
    response = env.post(body, headers)
    assert response.status_code == expected and response.is_json
    assert env.events() == []


def test_an_event_about_an_old_or_solved_ticket_routes_nothing(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """Deskroute classifies a ticket when it arrives. A ticket.created about a ticket created days ago (a
    misfired rule, a forged or replayed delivery) or already solved is left alone, and nothing is kept."""
    env.helpdesk.add_ticket(21, subject=SUBJECT, description=DESCRIPTION, tags=[])
    env.clock.advance(3 * 24 * 3600)
    env.helpdesk.add_ticket(22, subject=SUBJECT, description=DESCRIPTION, tags=[])
    env.helpdesk.solve(22)
    env.helpdesk.add_ticket(23, subject=SUBJECT, description=DESCRIPTION, tags=[])  # new: routed as usual
    for ticket_id in (21, 22, 23):
        assert env.post(*env.helpdesk.created_webhook(ticket_id, env.clock)).status_code == 202
    drain(env.services)
    assert [len(env.helpdesk.writes(n)) for n in (21, 22, 23)] == [0, 0, 1]
    assert not env.helpdesk.notes(21) and not env.helpdesk.notes(22)
    outcomes = {e["ticket_id"]: (e["state"], e["outcome"]) for e in env.events()}
    assert outcomes["21"] == outcomes["22"] == ("done", "not_new")
    assert env.services.store.tickets.get(env.name, "21") is None and len(env.classified) == 1
    whys = [r.why for r in caplog.records if r.getMessage().startswith("ticket.created for a ticket that is not new")]
    assert whys == ["created 72 h before the event", "already solved"]


def test_route_again_leaves_a_triage_ticket_that_people_took_on(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """*Route again* (`tickets retry --reclassify`) classifies a triaged ticket afresh and routes it; if an
    agent has taken it on meanwhile, theirs is the last word: nothing is written, and the decision that was
    applied stays (the reconciler reads later moves against it)."""
    events = {}
    for ticket_id in (24, 25, 26):
        env.helpdesk.add_ticket(ticket_id, subject="Hello", description="Quick question", tags=[])
        env.post(*env.helpdesk.created_webhook(ticket_id, env.clock))
        drain(env.services)
        [events[ticket_id]] = [e for e in env.events() if e["ticket_id"] == str(ticket_id)]
        [write] = env.helpdesk.writes(ticket_id)
        assert write.group_id == env.services.mappings[env.name].triage.group_id
    env.helpdesk.assign(24)  # 25 and 26 stay untouched
    sure = Classification(category="billing", confidence=0.99, tier="local", reason="a category added since")
    monkeypatch.setattr(env.services.router, "classify", lambda text, *more: env.classified.append(text) or sure)
    method, path = env.helpdesk.write_calls(26)[0]
    env.helpdesk.fake.fail_next(429, method=method, path=path, retry_after=600)  # 26's new routing must wait
    for event in events.values():
        assert env.services.store.events.requeue(event["id"], now=env.clock(), reclassify=True)
    drain(env.services)
    env.clock.advance(601)
    drain(env.services)

    assert len(env.helpdesk.writes(24)) == 1 and len(env.helpdesk.notes(24)) == 1
    outcomes = {e["ticket_id"]: (e["state"], e["outcome"]) for e in env.events()}
    assert outcomes["24"] == ("triage", "moved_by_people")
    taken = env.services.store.tickets.get(env.name, "24")
    assert taken is not None and taken.decision is not None and taken.decision.triage and taken.state == "triage"

    billing = str(mapped_route(env.name, "billing")["group_id"])
    assert [w.group_id for w in env.helpdesk.writes(25)] == [env.services.mappings[env.name].triage.group_id, billing]
    assert TRIAGE_TAG in env.helpdesk.writes(25)[0].tags and TRIAGE_TAG not in env.helpdesk.writes(25)[1].tags
    moved = env.services.store.tickets.get(env.name, "25")
    assert moved is not None and moved.decision is not None and moved.decision.category == "billing"
    assert outcomes["25"][0] == "done" and moved.state == "done"
    # 26's retry writes the decision its first attempt made: not classified again, not taken for people's move.
    assert [w.group_id for w in env.helpdesk.writes(26)][-1] == billing and outcomes["26"] == ("done", "routed")
    assert len(env.classified) == 3 + 2  # three first routings, and one Route again each for 25 and 26
    # A retry after that is a plain one: the flag went with the Route again it came with.
    assert env.services.store.events.requeue(events[25]["id"], now=env.clock())
    assert "reclassify" not in (env.services.store.events.get(events[25]["id"])["data"] or "")


def test_a_route_again_that_died_or_was_overtaken_leaves_the_record_true_to_the_ticket(
        make_env: Callable[..., Env], monkeypatch: pytest.MonkeyPatch) -> None:
    """With one attempt allowed, writes die at once. A Route again that died is finished by a plain Retry;
    one overtaken by an agent leaves the record with the decision on the ticket; and a ticket whose first
    routing never landed, taken on since, is left, and its record stays dead."""
    env = make_env(deskroute_max_attempts=1)
    triage_group = env.services.mappings[env.name].triage.group_id
    billing = str(mapped_route(env.name, "billing")["group_id"])
    events = {}
    for ticket_id in (31, 32):
        env.helpdesk.add_ticket(ticket_id, subject="Hello", description="Quick question", tags=[])
        env.post(*env.helpdesk.created_webhook(ticket_id, env.clock))
        drain(env.services)
        [events[ticket_id]] = [e for e in env.events() if e["ticket_id"] == str(ticket_id)]
    env.helpdesk.add_ticket(33, subject="Hello", description="Quick question", tags=[])
    method, path = env.helpdesk.write_calls(33)[0]
    env.helpdesk.fake.fail_next(429, method=method, path=path, retry_after=600)
    env.post(*env.helpdesk.created_webhook(33, env.clock))
    drain(env.services)
    [events[33]] = [e for e in env.events() if e["ticket_id"] == "33"]
    assert events[33]["state"] == "dead" and env.helpdesk.writes(33) == []

    sure = Classification(category="billing", confidence=0.99, tier="local", reason="a category added since")
    monkeypatch.setattr(env.services.router, "classify", lambda text, *more: env.classified.append(text) or sure)
    for ticket_id in (31, 32):
        method, path = env.helpdesk.write_calls(ticket_id)[0]
        env.helpdesk.fake.fail_next(429, method=method, path=path, retry_after=600)
    env.helpdesk.assign(33)
    for event in events.values():
        assert env.services.store.events.requeue(event["id"], now=env.clock(), reclassify=True)
    drain(env.services)
    state = {e["ticket_id"]: (e["state"], e["outcome"]) for e in env.events()}
    assert state["31"][0] == state["32"][0] == "dead"  # the new routing's write died
    assert state["33"] == ("done", "moved_by_people") and env.helpdesk.writes(33) == []
    left = env.services.store.tickets.get(env.name, "33")
    assert left is not None and left.state == "dead"  # nothing of ours is on it, as before

    env.helpdesk.assign(32)  # an agent takes 32 on meanwhile; 31 stays untouched
    for ticket_id in (31, 32):
        assert env.services.store.events.requeue(events[ticket_id]["id"], now=env.clock())  # plain Retry
    drain(env.services)
    assert [w.group_id for w in env.helpdesk.writes(31)] == [triage_group, billing]
    finished = env.services.store.tickets.get(env.name, "31")
    assert finished is not None and finished.decision is not None and finished.decision.category == "billing"
    assert [w.group_id for w in env.helpdesk.writes(32)] == [triage_group]
    overtaken = env.services.store.tickets.get(env.name, "32")  # the decision on the ticket, not the new one
    assert overtaken is not None and overtaken.decision is not None and overtaken.decision.triage
    assert overtaken.state == "triage" and overtaken.classification is not None
    assert overtaken.classification.category != "billing"  # the classification that went with it, too
    assert len(env.classified) == 3 + 2  # 31 and 32 were classified afresh once each; 33 not at all


def test_route_again_on_a_ticket_that_never_got_a_decision_and_was_taken_on_finishes(env: Env) -> None:
    """Its first event died before any decision (the helpdesk refused us); fixed, `retry --dead --reclassify`
    finds it assigned to an agent: left alone, the event finishes, the record stays dead."""
    env.helpdesk.add_ticket(42, subject="Hello", description="Quick question", tags=[])
    env.post(*env.helpdesk.created_webhook(42, env.clock))
    [event] = env.events()
    claimed = env.services.queue.claim("w")
    assert claimed is not None
    env.services.store.tickets.claim(platform=env.name, ticket_id="42", event_id=claimed.id, now=env.clock())
    env.services.queue.dead_letter(claimed, error="401 refused")
    env.helpdesk.assign(42)
    assert env.services.store.events.requeue(event["id"], now=env.clock(), reclassify=True)
    drain(env.services)
    [event] = env.events()
    assert (event["state"], event["outcome"]) == ("done", "moved_by_people") and env.helpdesk.writes(42) == []
    record = env.services.store.tickets.get(env.name, "42")
    assert record is not None and record.state == "dead" and record.decision is None


def test_a_route_again_keeps_no_copy_of_the_classification_once_finished_or_old(env: Env) -> None:
    """The flag copies the ticket's classification (Claude's summary, when it ran): it goes when the event
    finishes, and retention drops what a dead one kept, so ticket text is forgotten in one place."""
    env.helpdesk.add_ticket(51, subject="Hello", description="Quick question", tags=[])
    env.post(*env.helpdesk.created_webhook(51, env.clock))
    drain(env.services)
    [event] = env.events()
    assert env.services.store.events.requeue(event["id"], now=env.clock(), reclassify=True)
    assert "classification" in env.services.store.events.get(event["id"])["data"]
    drain(env.services)
    assert env.services.store.events.get(event["id"])["state"] in ("done", "triage")
    assert "reclassify" not in (env.services.store.events.get(event["id"])["data"] or "")

    assert env.services.store.events.requeue(event["id"], now=env.clock(), reclassify=True)
    env.services.store.db.execute("UPDATE events SET state = 'dead', finished_at = :t WHERE id = :id",
                                  {"t": env.clock(), "id": event["id"]})  # a Route again that died
    events = env.services.store.events
    assert events.forget_route_again_copies(env.clock() - 1) == 0  # not old enough yet
    assert events.forget_route_again_copies(env.clock() + 1) == 1
    assert "reclassify" not in (events.get(event["id"])["data"] or "")


def test_a_route_again_from_the_previous_release_leaves_a_solved_ticket_and_its_record(env: Env) -> None:
    """Mid-deploy, an older web process's Route again wiped the decision and set no flag. The ticket carries
    our routing, so it is no new arrival: solved since, it is left, and its record kept (not forgotten)."""
    env.helpdesk.add_ticket(41, subject="Hello", description="Quick question", tags=[])
    env.post(*env.helpdesk.created_webhook(41, env.clock))
    drain(env.services)
    [event] = env.events()
    env.helpdesk.solve(41)
    assert env.services.store.events.requeue(event["id"], now=env.clock())
    env.services.store.db.execute("UPDATE tickets SET state = 'new', classification = NULL, decision = NULL"
                                  " WHERE ticket_id = '41'")  # what the older release's requeue did
    drain(env.services)
    assert len(env.helpdesk.writes(41)) == 1
    assert env.services.store.tickets.get(env.name, "41") is not None
    assert env.events()[0]["outcome"] == "moved_by_people"


def test_429_with_retry_after_then_success(env: Env) -> None:
    method, path = env.helpdesk.write_calls(14)[0]
    env.helpdesk.fake.fail_next(429, method=method, path=path, retry_after=2)
    env.create(14)
    drain(env.services)
    assert len(env.helpdesk.writes(14)) == 1 and len(env.helpdesk.notes(14)) == 1
    assert env.events()[0]["state"] == "done"


def test_a_long_rate_limit_goes_back_to_the_queue_and_nothing_is_lost(env: Env) -> None:
    method, path = env.helpdesk.write_calls(15)[0]
    env.helpdesk.fake.fail_next(429, method=method, path=path, retry_after=600)
    env.create(15)
    drain(env.services)
    assert env.events()[0]["state"] == "pending" and env.helpdesk.writes(15) == []
    env.clock.advance(601)
    drain(env.services)
    assert len(env.helpdesk.writes(15)) == 1 and env.events()[0]["state"] == "done"


def test_5xx_three_times_then_success(env: Env) -> None:
    for method, path in env.helpdesk.write_calls(16):
        env.helpdesk.fake.fail_next(503, times=3, method=method, path=path)
    env.create(16)
    drain(env.services)
    assert len(env.helpdesk.writes(16)) == 1 and len(env.helpdesk.notes(16)) == 1
    assert env.events()[0]["state"] == "done"


def test_a_helpdesk_that_stays_down_ends_in_a_visible_dead_letter(make_env: Callable[..., Env]) -> None:
    env = make_env(deskroute_max_attempts=2)
    env.helpdesk.fake.random_faults = {503: 1.0}
    env.create(17)
    for _ in range(3):
        drain(env.services)
        env.clock.advance(3600)
    [event] = env.events()
    # On Zendesk the token endpoint is down too: the error names its 503.
    assert event["state"] == "dead" and "503" in event["last_error"] and event["attempts"] == 2


def test_write_call_timing_out_after_it_landed_is_not_repeated(env: Env) -> None:
    for n in range(len(env.helpdesk.write_calls(0))):  # each request apply() makes, in turn
        ticket = 118 + n
        method, path = env.helpdesk.write_calls(ticket)[n]
        env.helpdesk.fake.slow_next(1.0, method=method, path=path)  # longer than the 0.5 s client timeout
        env.create(ticket)
        drain(env.services)
        assert len(env.helpdesk.writes(ticket)) == 1, f"{method} timed out: written twice"
        assert len(env.helpdesk.notes(ticket)) == 1, f"{method} timed out: noted twice"
        record = env.services.store.tickets.get(env.name, str(ticket))
        assert record is not None and record.state == "done"


class Crash(BaseException):
    """The process dies (SIGKILL): no except clause sees it, nothing after it runs."""


def check_killed_after_the_write_does_not_write_again(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    original = env.services.store.tickets.finish

    def crash_once(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(env.services.store.tickets, "finish", original)
        raise Crash

    monkeypatch.setattr(env.services.store.tickets, "finish", crash_once)
    env.create(19)
    with pytest.raises(Crash):
        drain(env.services)
    env.clock.advance(env.services.settings.deskroute_lease_seconds + 1)
    drain(env.services)
    assert len(env.helpdesk.writes(19)) == 1, "written again after a crash"
    assert len(env.helpdesk.notes(19)) == 1, "noted again after a crash"
    assert env.events()[0]["state"] == "done" and env.events()[0]["attempts"] == 2


def test_worker_killed_after_the_write_does_not_write_again(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    check_killed_after_the_write_does_not_write_again(env, monkeypatch)


def test_worker_killed_before_the_write_is_finished_by_the_next_claim(env: Env) -> None:
    env.create(20)
    assert env.services.queue.claim("worker-that-dies") is not None
    env.clock.advance(env.services.settings.deskroute_lease_seconds + 1)
    drain(env.services)
    assert len(env.helpdesk.writes(20)) == 1 and len(env.helpdesk.notes(20)) == 1


def test_a_lease_lost_during_classification_writes_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A's classification outlives its lease (Claude's 40 s budget, say); worker B claims the job
    and routes the ticket; A then finds the job is no longer its own and writes nothing."""
    first, second = env.services.make_worker(), env.services.make_worker()
    classify = env.services.router.classify
    overtaken: list[bool] = []

    def slow_classify(text: str, *more: Any) -> Any:
        if not overtaken:
            overtaken.append(True)
            env.clock.advance(env.services.settings.deskroute_lease_seconds + 1)
            assert second.run_once()  # the lease expired: B claims the job and finishes it meanwhile
        return classify(text, *more)

    monkeypatch.setattr(env.services.router, "classify", slow_classify)
    env.create(22)
    assert first.run_once()
    assert len(env.helpdesk.writes(22)) == 1 and len(env.helpdesk.notes(22)) == 1
    [event] = env.events()
    assert event["state"] == "done" and event["attempts"] == 2  # B's attempt finished it; A left it alone


def test_a_lease_lost_while_a_write_waits_out_a_429_writes_once(env: Env) -> None:
    """A's last write request (Zendesk's PUT, Freshdesk's note) is rate limited; while A waits out the
    Retry-After its lease runs out and B routes the ticket. A's retry must not be sent."""
    first, second = env.services.make_worker(), env.services.make_worker()
    method, path = env.helpdesk.write_calls(24)[-1]
    env.helpdesk.fake.fail_next(429, method=method, path=path, retry_after=1)
    platform = env.services.platforms[env.name]
    overtaken: list[bool] = []

    def slow_wait(seconds: float) -> None:
        if not overtaken:
            overtaken.append(True)
            env.clock.advance(env.services.settings.deskroute_lease_seconds + 1)
            assert second.run_once()

    platform._call.sleep = slow_wait  # type: ignore[attr-defined]
    env.create(24)
    assert first.run_once() and overtaken
    assert len(env.helpdesk.writes(24)) == 1 and len(env.helpdesk.notes(24)) == 1
    assert env.events()[0]["state"] == "done"


def test_housekeeping_runs_before_the_claim_not_on_the_leases_time(env: Env) -> None:
    """A configuration reload that retrains the model takes a while: it must not eat a claimed job's lease."""
    first, second = env.services.make_worker(), env.services.make_worker()
    first.before_job = lambda: env.clock.advance(env.services.settings.deskroute_lease_seconds + 1)
    env.create(23)
    assert first.run_once()
    assert not second.run_once()  # nothing for B: A's lease was fresh while it worked
    assert env.events()[0]["attempts"] == 1 and len(env.helpdesk.writes(23)) == 1


def test_a_refused_routing_goes_to_triage_with_the_reason(env: Env) -> None:
    env.helpdesk.remove_group(int(mapped_route(env.name, "billing")["group_id"]))  # deleted by an admin
    env.create(21)
    drain(env.services)
    [write] = env.helpdesk.writes(21)
    assert TRIAGE_TAG in write.tags and write.tags[:2] == EXISTING_TAGS
    [note] = env.helpdesk.notes(21)
    assert "refused the routing" in note and "Best guess: billing" in note
    assert env.events()[0]["state"] == "triage"


def test_groups_are_listed(env: Env) -> None:
    groups = env.services.platforms[env.name].list_groups()
    assert {g.id for g in groups} == {str(g) for g in env.helpdesk.fake.groups}


# --- the contract bites --------------------------------------------------------------------------

def test_a_broken_adapter_fails_the_contract(helpdesk: Helpdesk, make_env: Callable[..., Env],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An adapter that drops the ticket's own tags, or writes again on a retry, is caught."""
    with monkeypatch.context() as patch:
        patch.setattr(f"platforms.{helpdesk.name}.merge_tags", lambda existing, ours: merge_tags([], ours))
        with pytest.raises(AssertionError, match="tags must be kept"):
            check_routes_once_keeping_the_agents_tags(make_env())

    class ForgetsItWrote(helpdesk.platform_class):  # type: ignore[name-defined,misc]
        def apply(self, ticket: Any, decision: Any, **options: Any) -> None:
            unrouted = ticket.model_copy(update={"tags": [t for t in ticket.tags if t != ROUTED_TAG]})
            super().apply(unrouted, decision, **options)

    with pytest.raises(AssertionError, match="again after a crash"):
        check_killed_after_the_write_does_not_write_again(make_env(platform_class=ForgetsItWrote), monkeypatch)
