"""Corrections: every agent re-route of a ticket we routed, and nothing else; ping-pong chains; review."""

from __future__ import annotations

import pytest

from connector.corrections import category_for_group
from connector.models import TicketEvent
from helpdesks import Env, mapped_route
from helpers import category_metrics, drain


def group(env: Env, category: str) -> int:
    return int(mapped_route(env.name, category)["group_id"])


def routed(env: Env, ticket_id: int) -> None:
    env.create(ticket_id)
    drain(env.services)
    record = env.services.store.tickets.get(env.name, str(ticket_id))
    assert record is not None and record.state == "done" and record.decision is not None
    assert record.decision.category == "billing"


def test_an_agent_reroute_gives_exactly_one_correction(env: Env) -> None:
    routed(env, 1)
    env.clock.advance(600)
    assert env.reroute(1, group(env, "bug_report")).status_code == 202
    drain(env.services)
    # The same webhook again, and another look at the same state, change nothing.
    env.post(*env.helpdesk.update_webhook(1, env.clock))
    drain(env.services)
    [correction] = env.services.store.corrections.find()
    assert correction["ticket_id"] == "1" and correction["seq"] == 1 and correction["is_final"]
    assert correction["predicted_category"] == "billing" and correction["predicted_tier"] == "rules"
    assert correction["predicted_group_id"] == str(group(env, "billing"))
    assert correction["previous_group_id"] == str(group(env, "billing"))
    assert correction["corrected_group_id"] == str(group(env, "bug_report"))
    assert correction["corrected_category"] == "bug_report" and correction["status"] == "pending"
    assert correction["rerouted_at"] >= correction["routed_at"]
    assert "October invoice" in correction["text"]
    if env.name == "zendesk":
        assert correction["agent_id"] == "555"


def test_our_own_write_is_not_a_correction(env: Env) -> None:
    routed(env, 2)
    # The helpdesk reports our own write as a group change (Zendesk's event, Freshdesk's update rule).
    env.post(*env.helpdesk.update_webhook(2, env.clock))
    drain(env.services)
    assert env.services.store.corrections.find() == []
    assert [e["outcome"] for e in env.events() if e["kind"] == "ticket.group_changed"] == ["no correction"]


def test_a_ticket_we_never_routed_gives_none(env: Env) -> None:
    env.helpdesk.add_ticket(3, subject="Old ticket", description="Created before Deskroute", tags=[])
    assert env.reroute(3, group(env, "bug_report")).status_code == 202
    drain(env.services)
    assert env.services.store.corrections.find() == []


def test_ping_pong_is_an_ordered_chain_labelled_with_the_last_group(env: Env) -> None:
    routed(env, 4)
    for category in ("bug_report", "feature_request", "bug_report"):
        env.clock.advance(60)
        env.reroute(4, group(env, category))
        drain(env.services)
    chain = env.services.store.corrections.for_ticket(env.name, "4")
    assert [c["seq"] for c in chain] == [1, 2, 3]
    assert [c["corrected_category"] for c in chain] == ["bug_report", "feature_request", "bug_report"]
    previous = [str(group(env, c)) for c in ("billing", "bug_report", "feature_request")]
    assert [c["previous_group_id"] for c in chain] == previous
    rows = env.services.store.corrections.find()
    assert {r["final_category"] for r in rows} == {"bug_report"} and [r["is_final"] for r in rows] == [0, 0, 1]


def test_the_poll_finds_a_reroute_whose_webhook_never_came(env: Env) -> None:
    from connector.scheduler import poll_reroutes

    routed(env, 5)
    env.helpdesk.move(5, group(env, "feature_request"))  # no webhook
    env.clock.advance(env.services.settings.deskroute_reroute_poll_minutes * 60 + 1)
    checked = poll_reroutes(env.services)
    assert checked == 1
    [correction] = env.services.store.corrections.find()
    assert correction["corrected_category"] == "feature_request"
    assert poll_reroutes(env.services) == 0  # checked just now: not again until the next interval


@pytest.mark.parametrize("helpdesk", ["zendesk"], indirect=True)  # Freshdesk's rule fires for agents only
def test_a_triggers_change_is_not_a_correction(env: Env) -> None:
    routed(env, 6)
    env.reroute(6, group(env, "outage_performance"), by="trigger")
    drain(env.services)
    assert env.services.store.corrections.find() == []
    # Then an agent moves it on: that one counts, and it came from the trigger's group.
    env.reroute(6, group(env, "feature_request"))
    drain(env.services)
    [correction] = env.services.store.corrections.find()
    assert correction["previous_group_id"] == str(group(env, "outage_performance"))


def test_a_group_change_before_routing_finished_is_ignored_until_the_poll(env: Env) -> None:
    env.helpdesk.add_ticket(7, subject="Invoice", description="Where is my invoice?", tags=[])
    env.services.queue.enqueue(TicketEvent(platform=env.name, kind="ticket.group_changed", ticket_id="7",
                                           dedup_key="early-7"))
    drain(env.services)
    assert env.services.store.corrections.find() == []


def test_groups_map_back_to_categories() -> None:
    from connector.mappings import load_mapping, load_taxonomy
    from helpers import PROJECT

    taxonomy = load_taxonomy(PROJECT / "mappings")
    mapping = load_mapping(PROJECT / "mappings", "zendesk", taxonomy)
    assert category_for_group(mapping, "360000000103") == "bug_report"
    assert category_for_group(mapping, "360000000106") == "ambiguous:how_to|user_management"
    assert category_for_group(mapping, "360000000101") == "ambiguous:billing|refunds_cancellation"
    assert category_for_group(mapping, "360000000100") == "triage"
    assert category_for_group(mapping, "999") == "unmapped:999"


def test_accuracy_per_category_from_reroutes(env: Env) -> None:

    routed(env, 8)
    routed(env, 9)
    env.clock.advance(3600)
    env.reroute(9, group(env, "bug_report"))
    drain(env.services)
    hours = env.services.settings.deskroute_accuracy_hours
    assert env.services.store.stats.accuracy(now=env.clock(), within_hours=hours, days=7) == []  # too recent to judge
    env.clock.advance(hours * 3600)
    [row] = env.services.store.stats.accuracy(now=env.clock(), within_hours=hours, days=7)
    assert (row["category"], row["routed"], row["rerouted"], row["accuracy"]) == ("billing", 2, 1, 0.5)
    samples = category_metrics(env.client, "billing")
    assert samples[("deskroute_category_accuracy", "7d")] == 0.5
    assert samples[("deskroute_category_routed", "30d")] == 2
