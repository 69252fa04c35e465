"""The helpdesk sidebar's API: the decision at a glance, and agents' "right" / "wrong" feedback recorded as
corrections team leads review and export, on both helpdesks."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from connector import create_app
from connector.apps_api import app_token
from connector.cli import main
from connector.models import TicketEvent
from connector.services import Services
from helpdesks import Env, mapped_route
from helpers import category_metrics, cli_environment, drain

TOKEN = "sidebar-token-for-tests-0123456789abcdef"


def auth(platform: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {app_token(TOKEN, platform)}"}


def sidebar(services: Services, token: str = TOKEN) -> Any:
    services.settings.deskroute_app_token = SecretStr(token)
    return create_app(services=services).test_client()


def routed(env: Env, ticket_id: int) -> Any:
    env.create(ticket_id)
    drain(env.services)
    return sidebar(env.services)


def test_the_sidebar_sees_the_decision_and_strangers_see_nothing(env: Env) -> None:
    client = routed(env, 11)
    url = f"/apps/api/tickets/{env.name}/11"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer guess"}).status_code == 401
    answer = client.get(url, headers=auth(env.name))
    assert answer.status_code == 200, answer.json
    view = answer.json
    assert view["category"] == "billing" and view["tier"] == "rules" and view["state"] == "done"
    assert view["group_id"] == str(mapped_route(env.name, "billing")["group_id"])
    assert view["summary"] == "Billing · 95% · keyword rule · keyword 'invoice'"
    assert {c["name"] for c in view["categories"]} >= {"billing", "bug_report"}
    assert client.get(f"/apps/api/tickets/{env.name}/999", headers=auth(env.name)).status_code == 404  # never seen
    off = sidebar(env.services, token="")
    assert off.get(url, headers=auth(env.name)).status_code == 404  # no DESKROUTE_APP_TOKEN: the API is off


def test_wrong_with_a_category_is_a_correction_team_leads_export(env: Env, tmp_path: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    client = routed(env, 12)
    url = f"/apps/api/tickets/{env.name}/12/feedback"
    headers = auth(env.name)
    assert client.post(url, json={"verdict": "wrong", "category": "no_such_thing"}, headers=headers).status_code == 422
    assert client.post(url, json={"verdict": "wrong", "category": "billing"}, headers=headers).status_code == 422
    assert client.post(url, json={"verdict": "wrong"}, headers=auth(env.name)).status_code == 400
    assert client.post(url, json={"verdict": "maybe"}, headers=auth(env.name)).status_code == 400
    assert client.post(url, json={"verdict": "wrong", "category": "bug_report"}).status_code == 401
    assert env.services.store.corrections.find() == []  # nothing recorded by refused requests
    sent = client.post(url, headers=auth(env.name), json={
        "verdict": "wrong", "category": "bug_report", "agent_id": "9001",
        "comment": "The export crashes, not billing; mail me at ada@example.com"})
    assert sent.status_code == 201 and sent.json == {"status": "recorded"}
    [correction] = env.services.store.corrections.find()
    assert correction["via"] == "agent_feedback" and correction["status"] == "pending"
    assert correction["predicted_category"] == "billing" and correction["corrected_category"] == "bug_report"
    assert correction["corrected_group_id"] == str(mapped_route(env.name, "bug_report")["group_id"])
    assert correction["agent_id"] == "9001" and "ada@example.com" not in correction["comment"]
    assert correction["comment"].startswith("The export crashes")
    assert correction["text"] is None  # the worker fetches it, off the agent's click
    drain(env.services)
    [correction] = env.services.store.corrections.find()
    assert correction["text"] and "invoice" in correction["text"].lower()  # the ticket, for retraining
    view = client.get(f"/apps/api/tickets/{env.name}/12", headers=auth(env.name)).json
    assert view["reroutes"] == [] and [f["category"] for f in view["feedback"]] == ["bug_report"]  # said, not moved

    cli_environment(monkeypatch, tmp_path, env.services.settings.database_url)
    exported = CliRunner().invoke(main, ["corrections", "export", "--format", "jsonl"])
    assert exported.exit_code == 0 and '"via": "agent_feedback"' in exported.output
    assert "The export crashes" in exported.output


def test_a_later_move_after_feedback_is_recorded_from_where_the_ticket_really_was(env: Env) -> None:
    client = routed(env, 14)
    client.post(f"/apps/api/tickets/{env.name}/14/feedback", headers=auth(env.name),
                json={"verdict": "wrong", "category": "bug_report"})
    env.clock.advance(600)
    env.reroute(14, int(mapped_route(env.name, "outage_performance")["group_id"]))
    drain(env.services)
    move = env.services.store.corrections.find()[-1]
    assert move["corrected_category"] == "outage_performance"
    assert move["previous_group_id"] == str(mapped_route(env.name, "billing")["group_id"])  # not the suggestion


def test_right_confirms_the_label_without_counting_as_a_reroute(env: Env) -> None:
    client = routed(env, 13)
    sent = client.post(f"/apps/api/tickets/{env.name}/13/feedback", headers=auth(env.name),
                       json={"verdict": "right", "agent_id": "7"})
    assert sent.status_code == 201
    [confirmed] = env.services.store.corrections.find()
    assert confirmed["via"] == "agent_confirmed" and confirmed["status"] == "accepted"
    assert confirmed["corrected_category"] == "billing"
    drain(env.services)  # the text, which learning needs, comes from the worker
    assert [label for _, label, _ in env.services.store.corrections.accepted()] == ["billing"]  # learned
    [row] = env.services.store.stats.recent_tickets()
    assert not row["rerouted"]


def test_cors_only_for_the_connected_helpdesk(env: Env) -> None:
    client = routed(env, 15)
    own = "https://acme.zendesk.com" if env.name == "zendesk" else "https://acme.freshdesk.com"
    mine = client.get(f"/apps/api/tickets/{env.name}/15", headers={**auth(env.name), "Origin": own})
    assert mine.headers.get("Access-Control-Allow-Origin") == own
    other = client.get(f"/apps/api/tickets/{env.name}/15", headers={**auth(env.name), "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_runner_ups_come_from_the_local_model_and_map_to_groups(services: Services) -> None:
    classification = services.router.classify("My card payment failed twice and now the account is locked")
    assert classification.tier in ("local", "triage", "llm")
    decided = classification.category
    assert 1 <= len(classification.alternatives) <= 2
    assert all(a.category not in (decided, "out_of_scope") for a in classification.alternatives)
    confidences = [a.confidence for a in classification.alternatives]
    assert confidences == sorted(confidences, reverse=True)


def test_each_helpdesk_has_its_own_token_and_a_short_one_turns_the_api_off(env: Env) -> None:
    client = routed(env, 16)
    other = "freshdesk" if env.name == "zendesk" else "zendesk"
    url = f"/apps/api/tickets/{env.name}/16"
    assert client.get(url, headers=auth(other)).status_code == 401  # the other helpdesk's app can't read ours
    assert client.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401  # nor the secret itself
    assert client.get(url, headers=auth(env.name)).status_code == 200
    weak = sidebar(env.services, token="changeme")
    assert weak.get(url, headers={"Authorization": f"Bearer {app_token('changeme', env.name)}"}).status_code == 404


def test_right_after_a_move_is_refused_so_the_move_is_what_gets_learned(env: Env) -> None:
    client = routed(env, 17)
    env.clock.advance(600)
    env.reroute(17, int(mapped_route(env.name, "bug_report")["group_id"]))
    drain(env.services)
    url = f"/apps/api/tickets/{env.name}/17/feedback"
    assert client.post(url, json={"verdict": "right"}, headers=auth(env.name)).status_code == 409
    view = client.get(f"/apps/api/tickets/{env.name}/17", headers=auth(env.name)).json
    assert [r["category"] for r in view["reroutes"]] == ["bug_report"] and view["feedback"] == []


def test_a_wrong_verdict_is_feedback_not_a_reroute_and_one_per_agent(env: Env) -> None:
    client = routed(env, 18)
    url = f"/apps/api/tickets/{env.name}/18/feedback"
    body = {"verdict": "wrong", "category": "bug_report", "agent_id": "5"}
    assert client.post(url, json=body, headers=auth(env.name)).status_code == 201
    assert client.post(url, json=body, headers=auth(env.name)).status_code == 409  # no piling up
    view = client.get(f"/apps/api/tickets/{env.name}/18", headers=auth(env.name)).json
    assert view["reroutes"] == [] and [f["category"] for f in view["feedback"]] == ["bug_report"]


def test_feedback_is_recorded_at_once_while_the_helpdesk_is_down_and_the_text_follows(env: Env) -> None:
    env.helpdesk.add_ticket(19, subject="Invoice missing", tags=[],
                            description="Please resend the October invoice to ada@example.com")
    env.post(*env.helpdesk.created_webhook(19, env.clock))
    drain(env.services)
    client = sidebar(env.services)
    fake = env.helpdesk.fake
    fake.random_faults = {503: 1.0}  # down
    calls = len(fake.requests)
    sent = client.post(f"/apps/api/tickets/{env.name}/19/feedback", headers=auth(env.name),
                       json={"verdict": "wrong", "category": "bug_report", "agent_id": "3"})
    assert sent.status_code == 201
    assert len(fake.requests) == calls  # the request never waited on the helpdesk
    [correction] = env.services.store.corrections.find()
    assert correction["text"] is None and correction["corrected_category"] == "bug_report"

    drain(env.services)  # the worker tries, and the queue keeps the job for later
    assert len(fake.requests) > calls and env.services.store.corrections.find()[0]["text"] is None
    fake.random_faults = {}
    env.clock.advance(3600)
    drain(env.services)
    [correction] = env.services.store.corrections.find()
    assert "October invoice" in correction["text"] and "ada@example.com" not in correction["text"]
    assert "[EMAIL]" in correction["text"]  # redacted like every kept text


def test_feedback_and_a_reconciled_move_on_one_ticket_never_share_a_seq(env: Env,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    client = routed(env, 20)
    env.clock.advance(600)
    env.helpdesk.move(20, int(mapped_route(env.name, "bug_report")["group_id"]))
    platform = env.services.platforms[env.name]
    history = platform.group_changes

    def feedback_meanwhile(ticket_id: str) -> Any:
        # The reconciler has read the chain; an agent's feedback lands before it writes the move.
        sent = client.post(f"/apps/api/tickets/{env.name}/20/feedback", headers=auth(env.name),
                           json={"verdict": "wrong", "category": "how_to"})
        assert sent.status_code == 201
        return history(ticket_id)

    monkeypatch.setattr(platform, "group_changes", feedback_meanwhile)
    assert env.services.reconciler.reconcile(env.name, "20") == 1
    chain = env.services.store.corrections.for_ticket(env.name, "20")
    assert [(c["seq"], c["corrected_category"]) for c in chain] == [(1, "how_to"), (2, "bug_report")]
    assert [c["is_final"] for c in env.services.store.corrections.find()] == [0, 1]


def test_concurrent_additions_to_one_chain_take_distinct_seqs(services: Services) -> None:
    row = {"platform": "zendesk", "ticket_id": "77", "status": "pending", "via": "agent_feedback"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        seqs = list(pool.map(lambda n: services.store.corrections.add({**row, "change_id": f"feedback:{n}"}),
                             range(24)))
    assert sorted(seq or 0 for seq in seqs) == list(range(1, 25))
    assert services.store.corrections.add({**row, "change_id": "feedback:3"}) is None  # already recorded


def test_a_rejected_wrong_verdict_does_not_count_against_accuracy(env: Env) -> None:
    client = routed(env, 21)
    routed(env, 22)
    for ticket_id in (21, 22):
        assert client.post(f"/apps/api/tickets/{env.name}/{ticket_id}/feedback", headers=auth(env.name),
                           json={"verdict": "wrong", "category": "bug_report"}).status_code == 201
    rejected = next(c for c in env.services.store.corrections.find() if c["ticket_id"] == "21")
    env.services.store.corrections.review(rejected["id"], status="rejected", reviewer="lead", now=env.clock())
    hours = env.services.settings.deskroute_accuracy_hours
    env.clock.advance(hours * 3600 + 60)
    [row] = env.services.store.stats.accuracy(now=env.clock(), within_hours=hours, days=7)
    # The team lead said Deskroute was right on 21; 22's verdict is still pending, so it counts.
    assert (row["category"], row["routed"], row["rerouted"], row["accuracy"]) == ("billing", 2, 1, 0.5)
    samples = category_metrics(env.client, "billing")
    assert samples[("deskroute_category_accuracy", "7d")] == 0.5


def test_naming_a_category_of_the_same_group_settles_the_label_and_the_routing_stays_right(env: Env) -> None:
    """Billing and refunds_cancellation share one group: "Wrong? refunds" corrects the label, not the routing."""
    client = routed(env, 23)
    assert client.post(f"/apps/api/tickets/{env.name}/23/feedback", headers=auth(env.name),
                       json={"verdict": "wrong", "category": "refunds_cancellation"}).status_code == 201
    [correction] = env.services.store.corrections.find()
    assert correction["corrected_group_id"] == correction["predicted_group_id"]
    hours = env.services.settings.deskroute_accuracy_hours
    env.clock.advance(hours * 3600 + 60)
    [row] = env.services.store.stats.accuracy(now=env.clock(), within_hours=hours, days=7)
    assert (row["category"], row["routed"], row["rerouted"], row["accuracy"]) == ("billing", 1, 0, 1.0)


# --- the text job -----------------------------------------------------------------------------------

def test_the_text_job_has_a_kind_of_its_own_and_is_no_group_change(env: Env) -> None:
    client = routed(env, 24)
    assert client.post(f"/apps/api/tickets/{env.name}/24/feedback", headers=auth(env.name),
                       json={"verdict": "wrong", "category": "bug_report", "agent_id": "4"}).status_code == 201
    job = env.events()[0]
    assert job["kind"] == "correction.text_needed" and job["state"] == "pending"
    drain(env.services)
    assert env.services.store.events.get(job["id"])["state"] == "done"
    assert env.services.store.tickets.group_changes(env.name, "24") == []  # nothing moved
    [correction] = env.services.store.corrections.find()
    assert "invoice" in correction["text"].lower()


def test_a_second_verdict_takes_the_text_already_kept_and_asks_the_helpdesk_nothing(env: Env) -> None:
    # Each verdict queues a text job; anyone holding the app's token could otherwise spend the helpdesk's API
    # budget one fetch per verdict.
    client = routed(env, 26)
    assert client.post(f"/apps/api/tickets/{env.name}/26/feedback", headers=auth(env.name),
                       json={"verdict": "wrong", "category": "bug_report", "agent_id": "4"}).status_code == 201
    drain(env.services)
    calls = len(env.helpdesk.fake.requests)
    assert client.post(f"/apps/api/tickets/{env.name}/26/feedback", headers=auth(env.name),
                       json={"verdict": "wrong", "category": "account_access", "agent_id": "5"}).status_code == 201
    drain(env.services)
    assert len(env.helpdesk.fake.requests) == calls
    first, second = env.services.store.corrections.find()
    assert first["text"] and second["text"] == first["text"]


def test_a_text_job_queued_by_an_older_version_is_still_done(env: Env) -> None:
    """Before it had a kind of its own, the job was a ticket.group_changed keyed by the correction's change id."""
    routed(env, 25)
    change_id = "feedback:0123456789abcdef0123456789abcdef"
    env.services.store.corrections.add({
        "platform": env.name, "ticket_id": "25", "change_id": change_id, "text": None, "agent_id": "4",
        "predicted_category": "billing", "corrected_category": "bug_report", "via": "agent_feedback",
        "status": "pending", "rerouted_at": env.clock(), "created_at": env.clock()})
    env.services.queue.enqueue(TicketEvent(platform=env.name, kind="ticket.group_changed", ticket_id="25",
                                           dedup_key=change_id, via="agent_feedback"))
    drain(env.services)
    [job] = [e for e in env.events() if e["dedup_key"] == change_id]
    assert job["state"] == "done" and job["kind"] == "correction.text_needed"  # as the Tickets page names it
    assert env.services.store.tickets.group_changes(env.name, "25") == []  # not taken for a move
    [correction] = env.services.store.corrections.find()
    assert "invoice" in correction["text"].lower()


# --- limits -----------------------------------------------------------------------------------------

def wrong(client: Any, env: Env, ticket_id: int, agent_id: str | None = None) -> Any:
    body = {"verdict": "wrong", "category": "bug_report", **({"agent_id": agent_id} if agent_id else {})}
    return client.post(f"/apps/api/tickets/{env.name}/{ticket_id}/feedback", json=body, headers=auth(env.name))


def test_a_feedback_body_nested_past_the_parser_is_a_400(env: Env) -> None:
    client = routed(env, 28)
    response = client.post(f"/apps/api/tickets/{env.name}/28/feedback", data=b"[" * 100_000 + b"]" * 100_000,
                           headers={**auth(env.name), "Content-Type": "application/json"})
    assert response.status_code == 400 and env.services.store.corrections.find() == []


def test_feedback_that_names_no_agent_is_one_verdict_too(env: Env) -> None:
    client = routed(env, 26)
    assert wrong(client, env, 26).status_code == 201
    again = wrong(client, env, 26)
    assert again.status_code == 409 and "already" in again.json["error"]
    assert len(env.services.store.corrections.find()) == 1


def test_a_ticket_takes_a_few_verdicts_an_hour_then_429_with_retry_after(env: Env) -> None:
    client = routed(env, 27)
    cap = env.services.settings.deskroute_feedback_per_ticket_per_hour
    for agent in range(cap):  # agent ids are the app's word: anyone with the token can make up more
        assert wrong(client, env, 27, f"agent-{agent}").status_code == 201
    env.clock.advance(600)
    refused = wrong(client, env, 27, "one-more")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "3000"
    assert "per hour" in refused.json["error"] and "try again in 50 min" in refused.json["error"]
    assert len(env.services.store.corrections.for_ticket(env.name, "27")) == cap
    routed(env, 28)
    assert wrong(client, env, 28, "one-more").status_code == 201  # the cap is per ticket
    env.clock.advance(3000)
    assert wrong(client, env, 27, "one-more").status_code == 201


def test_the_install_takes_so_many_verdicts_an_hour_from_all_tickets(env: Env,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A leaked app token could spread verdicts over every ticket, each sending a worker to the helpdesk for the
    ticket's text: the install-wide cap bounds what that costs."""
    caplog.set_level(logging.INFO, logger="connector.apps_api")
    env.services.settings.deskroute_feedback_per_hour = 3
    clients = [routed(env, ticket_id) for ticket_id in (41, 42, 43, 44)]
    for ticket_id in (41, 42):
        assert wrong(clients[0], env, ticket_id, "a").status_code == 201
    env.clock.advance(900)
    assert wrong(clients[0], env, 43, "a").status_code == 201
    env.clock.advance(300)
    refused = wrong(clients[0], env, 44, "a")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2400"  # when the first is an hour old
    assert "from all tickets" in refused.json["error"] and "try again in 40 min" in refused.json["error"]
    assert wrong(clients[0], env, 41, "a").status_code == 409  # a repeat is still a repeat, cap or not
    assert wrong(clients[0], env, 44, "b").status_code == 429
    refusals = [r.levelname for r in caplog.records if r.getMessage() == "agent feedback refused"]
    assert refusals == ["WARNING", "INFO", "INFO"]  # one warning a minute, whatever the flood
    assert env.services.store.corrections.for_ticket(env.name, "44") == []
    env.clock.advance(2400)
    assert wrong(clients[0], env, 44, "a").status_code == 201


def test_the_limits_hold_across_web_processes(env: Env) -> None:
    """Two web processes share nothing but the database: two apps over two stores, sending at once."""
    routed(env, 29)
    other = Services(env.services.settings, platforms=env.services.platforms, clock=env.clock)
    apps = [create_app(services=env.services), create_app(services=other)]

    def send(n: int, agent_id: str) -> int:
        return int(wrong(apps[n % 2].test_client(), env, 29, agent_id).status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        same_agent = list(pool.map(lambda n: send(n, "6"), range(8)))
        many_agents = list(pool.map(lambda n: send(n, f"agent-{n}"), range(12)))
    cap = env.services.settings.deskroute_feedback_per_ticket_per_hour
    assert sorted(same_agent) == [201] + [409] * 7
    assert many_agents.count(201) == cap - 1 and many_agents.count(429) == 12 - (cap - 1)
    assert len(env.services.store.corrections.for_ticket(env.name, "29")) == cap


def test_the_install_cap_holds_across_web_processes(env: Env) -> None:
    for ticket_id in range(51, 57):
        routed(env, ticket_id)
    env.services.settings.deskroute_feedback_per_hour = 3 + len(env.services.store.corrections.find())
    other = Services(env.services.settings, platforms=env.services.platforms, clock=env.clock)
    apps = [create_app(services=env.services), create_app(services=other)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(lambda n: int(wrong(apps[n % 2].test_client(), env, 51 + n, "a").status_code),
                              range(6)))
    assert sorted(codes) == [201] * 3 + [429] * 3
