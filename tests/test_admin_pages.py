"""The admin pages behind the login: overview, mappings editor, tickets, model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import responses
from click.testing import CliRunner

from connector import create_app
from connector.cli import main
from connector.model_keeper import training_status
from connector.models import Classification
from connector.services import Services
from helpers import ADMIN_PASSWORD as PASSWORD
from helpers import (
    FIXTURES,
    HTTPS,
    PROJECT,
    cli_environment,
    csrf,
    drain,
    login,
    signed_headers,
    trigger_body,
    zendesk_ticket,
)

API = "https://acme.zendesk.com/api/v2"
UPDATE_RESPONSE = json.loads((FIXTURES / "zendesk" / "ticket_update_response_200.json").read_text())
GROUPS = [{"id": gid, "name": f"Group {gid}"} for gid in range(360000000100, 360000000108)]


@pytest.fixture
def mappings_dir(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(PROJECT / "mappings", target)
    return target


@pytest.fixture
def admin_services(make_services: Any, mappings_dir: Path) -> Services:
    return make_services(deskroute_admin_password=PASSWORD, deskroute_mappings_dir=mappings_dir)


@pytest.fixture
def admin(admin_services: Services, zendesk_api: responses.RequestsMock) -> Any:
    zendesk_api.get(re.compile(rf"{API}/groups\.json.*"), json={"groups": GROUPS, "next_page": None, "count": 8})
    client = create_app(services=admin_services).test_client()
    assert login(client).status_code == 302
    return client


def page(client: Any, path: str) -> str:
    response = client.get(path, **HTTPS)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def form_for(category: str, group: str, **overrides: str) -> dict[str, str]:
    return {"description": f"{category} questions", "keywords": "", "examples": "one example\nanother example",
            "priority": "normal", "mode": "live", "zendesk_group_id": group, "zendesk_tags": "x, y",
            "zendesk_priority": "", "freshdesk_group_id": "201", "freshdesk_tags": "", "freshdesk_priority": "",
            **overrides}


def routed(services: Services, ticket_id: int, category: str, tier: str = "local", confidence: float = 0.9) -> None:
    """A ticket as if the worker had classified and routed it."""
    record = services.store.tickets.claim(platform="zendesk", ticket_id=str(ticket_id), event_id=ticket_id,
                                         now=services.clock())
    classification = Classification(category=category, confidence=confidence, tier=tier, reason="test")
    decision = services.router.decide("zendesk", classification)
    services.store.tickets.save_decision(record, classification=classification, decision=decision, now=services.clock())
    services.store.tickets.finish(record, state="done", now=services.clock())


def test_overview_counts_tickets_tiers_and_draws_the_mix(admin: Any, admin_services: Services) -> None:
    for ticket_id, tier in ((1, "local"), (2, "local"), (3, "rules")):
        routed(admin_services, ticket_id, "billing", tier=tier)
    html = page(admin, "/admin/")
    assert re.search(r'id="tickets-today">3<', html)
    assert "<td>local</td><td>2</td><td>67%</td>" in html
    assert "<svg" in html and "billing" in html  # the category-mix chart, with its legend


def test_editing_a_category_validates_the_group_and_records_history(admin: Any, admin_services: Services,
                                                                    mappings_dir: Path) -> None:
    before = (mappings_dir / "zendesk.yaml").read_text()
    edit = page(admin, "/admin/mappings/billing")
    assert 'value="360000000101"' in edit and "Group 360000000107" in edit  # current group, live group list

    token = csrf(admin, "/admin/mappings/billing")
    bad = admin.post("/admin/mappings/billing", data={**form_for("billing", "999"), "csrf_token": token}, **HTTPS)
    assert bad.status_code == 400
    assert "group 999 doesn&#39;t exist in zendesk" in bad.get_data(as_text=True)
    assert admin_services.store.configs.latest_version() is None  # nothing stored

    good = admin.post("/admin/mappings/billing", data={**form_for("billing", "360000000105"), "csrf_token": token},
                      **HTTPS)
    assert good.status_code == 302
    live = admin_services.store.configs.latest()
    assert live is not None and live.version == admin_services.config_version and live.author == "admin"
    after = live.files["zendesk.yaml"]
    assert "group_id: 360000000105" in after.split("billing:")[1].split("refunds_cancellation")[0]
    assert after.startswith("# Where each category goes in Zendesk.")  # comments survive the round trip
    assert (mappings_dir / "zendesk.yaml").read_text() == before  # the files are the defaults, never rewritten
    assert admin_services.mappings["zendesk"].categories["billing"].group_id == "360000000105"  # reloaded
    listing = page(admin, "/admin/mappings")
    assert 'id="zendesk-billing">360000000105<' in listing
    history = listing.split('id="history"')[1]
    assert "zendesk.yaml" in history and "category billing" in history and "+    group_id: 360000000105" in history
    [change] = [c for c in admin_services.store.configs.changes() if c["file"] == "zendesk.yaml"]
    assert change["version"] == live.version and change["author"] == "admin"


TICKET_FIELDS = [
    {"id": 360001, "title": "Subject", "type": "subject", "active": True},
    {"id": 360002, "title": "Deskroute category", "type": "tagger", "active": True, "custom_field_options": [
        {"id": 1, "name": "Needs triage", "value": "deskroute_needs_triage"}]},  # no option per category yet
    {"id": 360003, "title": "Deskroute tier", "type": "text", "active": True},
]


def test_an_admin_sets_the_triage_route_and_ticket_fields_and_the_router_uses_them(
        admin: Any, admin_services: Services, zendesk_api: responses.RequestsMock) -> None:
    zendesk_api.get(re.compile(rf"{API}/ticket_fields\.json.*"), json={"ticket_fields": TICKET_FIELDS,
                                                                        "next_page": None, "count": 3})
    assert 'href="/admin/mappings/helpdesk/zendesk"' in page(admin, "/admin/mappings")
    form = page(admin, "/admin/mappings/helpdesk/zendesk")
    assert 'value="360000000100"' in form and "Deskroute tier (360003, text)" in form
    assert "Subject (360001" not in form  # a system field can't take Deskroute's values: not offered
    token = csrf(admin, "/admin/mappings/helpdesk/zendesk")
    fields = {"field_category": "360002", "field_confidence_band": "", "field_tier": "360003"}
    bad = admin.post("/admin/mappings/helpdesk/zendesk", data={
        "triage_group_id": "360000000106", "triage_tags": "needs_routing", **fields, "csrf_token": token}, **HTTPS)
    assert bad.status_code == 400  # what doctor would flag is refused, with doctor's words
    assert "no option with the value deskroute_billing" in bad.get_data(as_text=True)
    assert admin_services.store.configs.latest_version() is None

    saved = admin.post("/admin/mappings/helpdesk/zendesk", data={
        "triage_group_id": "360000000106", "triage_tags": "needs_routing, deskroute", "field_category": "",
        "field_confidence_band": "", "field_tier": "360003", "csrf_token": token}, **HTTPS)
    assert saved.status_code == 302
    mapping = admin_services.mappings["zendesk"]
    assert mapping.triage.group_id == "360000000106" and mapping.triage.tags == ["needs_routing", "deskroute"]
    assert mapping.fields.configured() == {"tier": "360003"}
    text = admin_services.store.configs.latest().files["zendesk.yaml"]  # type: ignore[union-attr]
    assert text.index("# fields:") < text.index("\nfields:\n  tier: 360003\n") < text.index("\ntriage:")
    unsure = Classification(category=None, confidence=0.3, tier="triage", reason="test")
    decision = admin_services.router.decide("zendesk", unsure)
    assert decision.group_id == "360000000106" and decision.fields == {"360003": "deskroute_tier_triage"}
    listing = page(admin, "/admin/mappings")
    assert "tier: 360003" in listing.split('id="helpdesks"')[1]
    assert "zendesk triage and fields" in listing.split('id="history"')[1]

    cleared = admin.post("/admin/mappings/helpdesk/zendesk", data={
        "triage_group_id": "360000000106", "triage_tags": "needs_routing, deskroute", "field_category": "",
        "field_confidence_band": "", "field_tier": "", "csrf_token": token}, **HTTPS)
    assert cleared.status_code == 302 and admin_services.mappings["zendesk"].fields.configured() == {}
    assert "fields:" not in admin_services.store.configs.latest().files["zendesk.yaml"].split("\ntriage:")[1]


def test_the_helpdesk_form_refuses_an_unknown_group_and_takes_field_ids_unchecked_when_fields_cant_be_listed(
        admin: Any, admin_services: Services, zendesk_api: responses.RequestsMock) -> None:
    zendesk_api.get(re.compile(rf"{API}/ticket_fields\.json.*"), status=503, json={"error": "down"})
    form = page(admin, "/admin/mappings/helpdesk/zendesk")
    assert 'id="fields-unchecked"' in form and '<input type="text" id="field_tier"' in form
    token = csrf(admin, "/admin/mappings/helpdesk/zendesk")
    data = {"triage_group_id": "999", "field_category": "", "field_confidence_band": "", "field_tier": "360009",
            "csrf_token": token}
    bad = admin.post("/admin/mappings/helpdesk/zendesk", data=data, **HTTPS)
    assert bad.status_code == 400 and "group 999 doesn&#39;t exist in zendesk" in bad.get_data(as_text=True)
    ok = admin.post("/admin/mappings/helpdesk/zendesk", data={**data, "triage_group_id": "360000000100"}, **HTTPS)
    assert ok.status_code == 302 and admin_services.mappings["zendesk"].fields.configured() == {"tier": "360009"}
    assert admin.get("/admin/mappings/helpdesk/nowhere", **HTTPS).status_code == 404


def test_saving_a_mapping_leaves_the_files_alone(admin: Any, admin_services: Services, mappings_dir: Path) -> None:
    files = {path.name: (path.read_text(), path.stat().st_mtime_ns) for path in mappings_dir.glob("*.yaml")}
    token = csrf(admin, "/admin/mappings/billing")
    response = admin.post("/admin/mappings/billing", data={**form_for("billing", "360000000105"),
                                                           "csrf_token": token}, **HTTPS)
    assert response.status_code == 302 and admin_services.store.configs.latest_version() is not None
    assert {path.name: (path.read_text(), path.stat().st_mtime_ns) for path in mappings_dir.glob("*.yaml")} == files
    assert not list(mappings_dir.glob(".*"))  # no temporary file left beside them either


def test_adding_a_category_reaches_the_router_and_a_bad_name_is_refused(admin: Any, admin_services: Services,
                                                                       mappings_dir: Path) -> None:
    token = csrf(admin, "/admin/mappings/new")
    bad = admin.post("/admin/mappings/new", data={**form_for("x", "360000000100"), "name": "Has Spaces",
                                                  "csrf_token": token}, **HTTPS)
    assert bad.status_code == 400 and 'role="alert"' in bad.get_data(as_text=True)
    assert admin_services.store.configs.latest_version() is None
    response = admin.post("/admin/mappings/new", data={
        **form_for("gift_cards", "360000000106", keywords="gift card", examples="my gift card is not accepted"),
        "name": "gift_cards", "csrf_token": token}, **HTTPS)
    assert response.status_code == 302
    assert "gift_cards" in admin_services.taxonomy.categories
    assert admin_services.router.classify("where do I redeem a gift card").category == "gift_cards"  # rules tier
    live = admin_services.store.configs.latest()
    assert live is not None and "gift_cards:" in live.files["freshdesk.yaml"]
    assert "gift_cards:" not in (mappings_dir / "freshdesk.yaml").read_text()


def test_a_helpdesk_that_is_not_connected_needs_no_group_invented(admin: Any, admin_services: Services) -> None:
    """A Zendesk-only install (here) still has freshdesk.yaml, where every category needs a route: a new
    category goes to Freshdesk's triage group there; an existing one keeps its route."""
    assert "freshdesk" not in admin_services.platforms
    form = page(admin, "/admin/mappings/new")
    assert "freshdesk (not connected)" in form and 'name="freshdesk_group_id" list="freshdesk-groups"\n' in form
    token = csrf(admin, "/admin/mappings/new")
    blank = {"freshdesk_group_id": "", "zendesk_group_id": ""}
    refused = admin.post("/admin/mappings/new", data={**form_for("gift_cards", "", **blank), "name": "gift_cards",
                                                      "csrf_token": token}, **HTTPS)
    assert refused.status_code == 400 and "zendesk: choose a group" in refused.get_data(as_text=True)  # connected
    saved = admin.post("/admin/mappings/new", data={**form_for("gift_cards", "360000000106", freshdesk_group_id=""),
                                                    "name": "gift_cards", "csrf_token": token}, **HTTPS)
    assert saved.status_code == 302, saved.get_data(as_text=True)[:300]
    freshdesk = admin_services.mappings["freshdesk"]
    assert freshdesk.categories["gift_cards"].group_id == freshdesk.triage.group_id
    before = freshdesk.categories["billing"].group_id
    assert admin.post("/admin/mappings/billing", data={**form_for("billing", "360000000101", freshdesk_group_id=""),
                                                       "csrf_token": token}, **HTTPS).status_code == 302
    assert admin_services.mappings["freshdesk"].categories["billing"].group_id == before


def test_a_new_keyword_that_other_categories_tickets_contain_needs_a_confirmation(admin: Any,
                                                                                  admin_services: Services) -> None:
    """A keyword decides a ticket alone: "help" on billing sent "can you help me set up a dashboard" there."""
    billing = admin_services.taxonomy.categories["billing"]
    keywords = ", ".join([*billing.keywords, "help"])
    token = csrf(admin, "/admin/mappings/billing")
    form = {**form_for("billing", "360000000101", keywords=keywords), "csrf_token": token}
    refused = admin.post("/admin/mappings/billing", data=form, **HTTPS)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 400 and "&#39;help&#39; is in example tickets of account_access." in text
    assert 'id="keywords_checked"' in text and admin_services.store.configs.latest_version() is None
    saved = admin.post("/admin/mappings/billing", data={**form, "keywords_checked": "1"}, **HTTPS)
    assert saved.status_code == 302 and "help" in admin_services.taxonomy.categories["billing"].keywords
    again = admin.post("/admin/mappings/billing", data=form, **HTTPS)  # not new any more: no question
    assert again.status_code == 302


def test_shadow_mode_classifies_without_writing(admin: Any, admin_services: Services,
                                                zendesk_api: responses.RequestsMock, clock: Any) -> None:
    token = csrf(admin, "/admin/mappings/billing")
    shadow = form_for("billing", "360000000101", mode="shadow", keywords="invoice")
    assert admin.post("/admin/mappings/billing", data={**shadow, "csrf_token": token}, **HTTPS).status_code == 302
    zendesk_api.get(f"{API}/tickets/7.json", json=zendesk_ticket(
        7, subject="Invoice", description="Please send me a copy of my invoice for October"))
    body = trigger_body(7)
    assert admin.post("/webhooks/zendesk", data=body, headers=signed_headers(body, clock)).status_code == 202
    drain(admin_services)
    record = admin_services.store.tickets.get("zendesk", "7")
    assert record is not None and record.state == "shadow" and record.decision is not None
    assert not [c for c in zendesk_api.calls if c.request.method in ("PUT", "POST") and "/api/" in c.request.url]


def test_tickets_page_finds_a_ticket_and_retries_a_dead_job(admin: Any, admin_services: Services,
                                                           zendesk_api: responses.RequestsMock, clock: Any) -> None:
    routed(admin_services, 41, "billing")
    html = page(admin, "/admin/tickets?q=41")
    assert "zendesk #41" in html and "billing" in html and "test" in html  # the decision's reason

    zendesk_api.get(f"{API}/tickets/9.json", status=404, json={"error": "RecordNotFound"})
    body = trigger_body(9)
    admin.post("/webhooks/zendesk", data=body, headers=signed_headers(body, clock))
    drain(admin_services)
    [event] = admin_services.store.events.recent(state="dead")
    html = page(admin, "/admin/tickets?state=dead")
    assert f"/admin/tickets/{event['id']}/retry" in html

    zendesk_api.replace(responses.GET, f"{API}/tickets/9.json", json=zendesk_ticket(
        9, subject="Login", description="I can't log in, password reset email never arrives"))
    zendesk_api.put(f"{API}/tickets/9.json", json=UPDATE_RESPONSE)
    response = admin.post(f"/admin/tickets/{event['id']}/retry", data={"csrf_token": csrf(admin, "/admin/tickets")},
                          **HTTPS)
    assert response.status_code == 302
    drain(admin_services)
    assert admin_services.store.tickets.get("zendesk", "9").state == "done"
    again = admin.post(f"/admin/tickets/{event['id']}/retry", data={"csrf_token": csrf(admin, "/admin/tickets")},
                       **HTTPS)
    assert again.status_code == 302  # a finished job may go again; a missing one may not
    assert admin.post("/admin/tickets/99999/retry", data={"csrf_token": csrf(admin, "/admin/tickets")},
                      **HTTPS).status_code == 409


def test_model_page_shows_versions_and_the_confusion_heatmap(admin: Any, admin_services: Services) -> None:
    html = page(admin, "/admin/model")
    assert "v1" in html and "active" in html
    assert "<svg" in html and "billing" in html  # the held-out confusion heatmap
    response = admin.post("/admin/model/rollback", data={"csrf_token": csrf(admin, "/admin/model")}, **HTTPS)
    assert response.status_code == 400  # nothing to roll back to, said plainly


@pytest.mark.parametrize("named", [False, True])
def test_retrain_now_is_run_by_a_worker_not_the_web_request(admin: Any, admin_services: Services, clock: Any,
                                                            named: bool) -> None:
    """A retrain on a real feedback dataset takes minutes: longer than gunicorn lets a request live. The
    Retrains table says who asked for it."""
    from test_learning import SSO_CONFIG, accept_corrections

    from connector.admin.gate import hash_password

    if named:
        admin_services.store.users.add("maria", hash_password("maria's long password"), now=clock(), role="admin")
        assert login(admin, "maria's long password", name="maria").status_code == 302

    spawned: list[Any] = []
    admin_services.model_keeper._spawn = spawned.append
    clock.advance(3600)
    accept_corrections(admin_services, SSO_CONFIG, "integrations_api", clock)
    versions = len(admin_services.store.models.all())
    token = csrf(admin, "/admin/model")
    response = admin.post("/admin/model/retrain", data={"csrf_token": token}, **HTTPS)
    assert response.status_code == 302 and len(admin_services.store.models.all()) == versions  # nothing trained
    assert "Retrain requested" in page(admin, response.headers["Location"])
    again = admin.post("/admin/model/retrain", data={"csrf_token": token}, **HTTPS)
    assert "already requested" in page(admin, again.headers["Location"])
    assert 'id="training">A retrain is requested' in page(admin, "/admin/model")

    admin_services._model_check_due = True
    admin_services._before_job()  # a worker's next job: the request is taken up in the background
    [train] = spawned
    train()
    assert len(admin_services.store.models.all()) == versions + 1  # the candidate, promoted or refused
    shown = page(admin, "/admin/model")
    assert 'id="training"' not in shown
    [done] = admin_services.store.retrains.recent()
    assert done.trigger == ("admin:maria" if named else "admin")
    assert done.outcome == "promoted" and done.version == versions + 1
    asked = "Retrain now, by maria" if named else "Retrain now"
    assert f"promoted (v{done.version})" in shown and asked in shown.split('id="retrains"')[1]
    admin_services._model_check_due = True
    admin_services._before_job()
    assert len(spawned) == 1  # done: nothing asked any more


def test_a_retrain_that_trains_nothing_says_why_on_the_model_page(admin: Any, admin_services: Services,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipped (too little new feedback) or failed, a retrain leaves no model: before, only a worker's log said so."""
    import connector.feedback

    versions = len(admin_services.store.models.all())
    token = csrf(admin, "/admin/model")
    assert admin.post("/admin/model/retrain", data={"csrf_token": token}, **HTTPS).status_code == 302
    admin_services._model_check_due = True
    admin_services._before_job()  # trainings run inline in tests
    assert len(admin_services.store.models.all()) == versions
    retrains = page(admin, "/admin/model").split('id="retrains"')[1]
    assert "skipped" in retrains and "new feedback example(s) to judge a candidate on" in retrains

    def broken(*args: Any, **kwargs: Any) -> None:
        raise MemoryError("ticket text must not show here")

    monkeypatch.setattr(connector.feedback, "retrain", broken)
    admin.post("/admin/model/retrain", data={"csrf_token": token}, **HTTPS)
    admin_services._model_check_due = True
    admin_services._before_job()  # the failure is logged; routing goes on
    failed, skipped = admin_services.store.retrains.recent()
    assert (failed.outcome, skipped.outcome) == ("failed", "skipped")
    assert failed.reason.startswith("MemoryError") and "ticket text" not in failed.reason
    assert "failed" in page(admin, "/admin/model").split('id="retrains"')[1]


def test_every_page_needs_the_login(admin_services: Services) -> None:
    client = create_app(services=admin_services).test_client()
    for path in ("/admin/", "/admin/mappings", "/admin/mappings/billing", "/admin/mappings/helpdesk/zendesk",
                 "/admin/tickets", "/admin/model",
                 "/admin/corrections", "/admin/corrections.csv"):
        response = client.get(path, **HTTPS)
        assert response.status_code == 302 and "/admin/login" in response.headers["Location"], path
    token = csrf(client)
    assert client.post("/admin/mappings/billing", data={"csrf_token": token}, **HTTPS).status_code == 302


def test_the_cli_lists_and_retries_like_the_tickets_page(admin_services: Services, zendesk_api: responses.RequestsMock,
                                                         clock: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    client = create_app(services=admin_services).test_client()
    zendesk_api.get(f"{API}/tickets/9.json", status=404, json={"error": "RecordNotFound"})
    body = trigger_body(9)
    client.post("/webhooks/zendesk", data=body, headers=signed_headers(body, clock))
    drain(admin_services)
    [event] = admin_services.store.events.recent(state="dead")

    cli_environment(monkeypatch, tmp_path, admin_services.settings.database_url)
    listing = CliRunner().invoke(main, ["tickets", "list", "--state", "dead"], catch_exceptions=False)
    assert listing.exit_code == 0 and f"event {event['id']}" in listing.output and "zendesk #9" in listing.output
    assert "error: 404" in listing.output and "triage" not in listing.output  # never classified: "-", and why
    # A dead event that no ticket row shows (here: a re-route event for a ticket the helpdesk deleted).
    moved = trigger_body(9, "ticket.group_changed")
    client.post("/webhooks/zendesk", data=moved, headers=signed_headers(moved, clock))
    admin_services.queue.dead_letter(admin_services.queue.claim("w"), error="404 RecordNotFound")  # type: ignore[arg-type]
    listing = CliRunner().invoke(main, ["tickets", "list", "--state", "dead"], catch_exceptions=False).output
    assert "(ticket.group_changed)  error: 404 RecordNotFound" in listing and listing.count("zendesk #9") == 2
    missing = CliRunner().invoke(main, ["tickets", "retry", "424242"], catch_exceptions=False)
    assert missing.exit_code == 1 and "not finished or unknown" in missing.output
    retried = CliRunner().invoke(main, ["tickets", "retry", str(event["id"])], catch_exceptions=False)
    assert retried.exit_code == 0 and "queued again" in retried.output
    assert admin_services.store.events.recent(state="pending")[0]["id"] == event["id"]
    drain(admin_services)
    assert admin_services.store.events.recent(state="dead")  # still a 404: dead again
    every = CliRunner().invoke(main, ["tickets", "retry", "--dead"], catch_exceptions=False)
    assert every.exit_code == 0 and f"event {event['id']}: queued again" in every.output
    assert not admin_services.store.events.recent(state="dead")


def test_the_group_list_is_asked_once_a_minute_for_the_whole_install(
        admin: Any, make_services: Any, mappings_dir: Path, zendesk_api: responses.RequestsMock) -> None:
    def asked() -> int:
        return sum("/groups.json" in call.request.url for call in zendesk_api.calls)

    assert "Group 360000000107" in page(admin, "/admin/mappings/billing")
    assert asked() == 1
    other = create_app(services=make_services(deskroute_admin_password=PASSWORD,
                                              deskroute_mappings_dir=mappings_dir)).test_client()
    assert login(other).status_code == 302  # another web process of the same install
    assert "Group 360000000107" in page(other, "/admin/mappings/billing")
    assert asked() == 1  # it used the list the first process stored


def test_the_helpdesk_page_asks_for_the_ticket_fields_once_a_minute(
        admin: Any, zendesk_api: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reloading the page (anyone signed in may) must not spend the helpdesk's API rate."""
    def asked() -> int:
        return sum("/ticket_fields" in call.request.url for call in zendesk_api.calls)

    zendesk_api.get(re.compile(rf"{API}/ticket_fields\.json.*"), json={"ticket_fields": TICKET_FIELDS,
                                                                        "next_page": None, "count": 3})
    now = [1000.0]
    monkeypatch.setattr("connector.admin.auth.time.monotonic", lambda: now[0])
    for _ in range(5):
        page(admin, "/admin/mappings/helpdesk/zendesk")
    assert asked() == 1
    now[0] += 61
    page(admin, "/admin/mappings/helpdesk/zendesk")
    assert asked() == 2


def test_the_corrections_page_gives_reviewers_the_ticket_the_comment_and_the_choice(
        admin: Any, admin_services: Services) -> None:
    base = {"platform": "zendesk", "predicted_category": "bug_report", "predicted_group_id": "360000000103",
            "predicted_tier": "local", "predicted_confidence": 0.7, "previous_group_id": "360000000103",
            "corrected_group_id": "360000000101", "routed_at": 1.0, "rerouted_at": 2.0, "status": "pending",
            "created_at": 2.0}
    admin_services.store.corrections.add({**base, "ticket_id": "71", "change_id": "c1", "seq": 1,
                                          "text": "Charged twice\nPlease refund the duplicate charge.",
                                          "corrected_category": "ambiguous:billing|refunds_cancellation"})
    admin_services.store.corrections.add({**base, "ticket_id": "72", "change_id": "feedback:x", "seq": 1,
                                          "text": "Export crashes\nThe CSV export fails.", "via": "agent_feedback",
                                          "corrected_category": "billing", "comment": "it is about the invoice"})
    html = page(admin, "/admin/corrections")
    assert 'href="https://acme.zendesk.com/agent/tickets/71"' in html and "Charged twice" in html
    assert "Please refund" not in html  # the subject line only
    choice = html.split("/admin/corrections/1")[1].split("</form>")[0]
    assert 'type="radio" name="label" value="billing">' in choice and "checked" not in choice  # no nudge
    assert 'value="refunds_cancellation"' in choice and "<select" not in choice
    assert "<q>it is about the invoice</q>" in html and "(said in the sidebar)" in html


def test_a_correction_that_names_no_category_is_not_accepted_until_the_reviewer_picks_one(
        admin: Any, admin_services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted, it would have been dropped from the retrain without a word: the model learns categories."""
    base = {"platform": "zendesk", "predicted_category": "bug_report", "predicted_group_id": "360000000103",
            "predicted_tier": "local", "predicted_confidence": 0.7, "previous_group_id": "360000000103",
            "routed_at": 1.0, "rerouted_at": 2.0, "status": "pending", "created_at": 2.0, "seq": 1}
    admin_services.store.corrections.add({
        **base, "ticket_id": "81", "change_id": "c1", "text": "Charged twice", "corrected_group_id": "360000000101",
        "corrected_category": "ambiguous:billing|refunds_cancellation"})
    admin_services.store.corrections.add({
        **base, "ticket_id": "82", "change_id": "c2", "text": "Where is my parcel", "corrected_group_id": "999",
        "corrected_category": "unmapped:999"})
    shared, unmapped = (row["id"] for row in admin_services.store.corrections.find())
    token = csrf(admin, "/admin/corrections")
    refused = admin.post(f"/admin/corrections/{shared}", data={"csrf_token": token, "action": "accept"}, **HTTPS)
    told = page(admin, refused.headers["Location"])
    assert "Not accepted" in told and "say which category it was" in told
    assert "Not accepted" not in page(admin, "/admin/corrections")  # said once, from the session
    crafted = page(admin, "/admin/corrections?message=Session+expired%2C+log+in+at+evil.example")
    assert "evil.example" not in crafted  # a link can't put words on the page
    assert admin_services.store.corrections.get(shared)["status"] == "pending"  # type: ignore[index]
    admin.post(f"/admin/corrections/{shared}", data={"csrf_token": token, "action": "accept",
                                                      "label": "refunds_cancellation"}, **HTTPS)
    settled = admin_services.store.corrections.get(shared)
    assert settled is not None and (settled["status"], settled["label"]) == ("accepted", "refunds_cancellation")
    admin.post(f"/admin/corrections/{unmapped}", data={"csrf_token": token, "action": "reject"}, **HTTPS)
    assert admin_services.store.corrections.get(unmapped)["status"] == "rejected"  # type: ignore[index]

    cli_environment(monkeypatch, tmp_path, admin_services.settings.database_url)
    again = CliRunner().invoke(main, ["corrections", "accept", str(unmapped)])
    assert again.exit_code == 1 and "unmapped:999, which is no category" in again.output, again.output
    assert admin_services.store.corrections.get(unmapped)["status"] == "rejected"  # type: ignore[index]
    listed = CliRunner().invoke(main, ["corrections", "list", "--status", "all"])
    assert listed.exit_code == 0 and "rejected" in listed.output and "accepted" in listed.output


def test_the_new_admin_writes_need_the_login_and_a_csrf_token(admin: Any, admin_services: Services) -> None:
    """An attacker's form (no session, or a logged-in admin's browser without the page's token) can neither
    rewrite a helpdesk's triage route and fields nor start a retrain."""
    form = {"triage_group_id": "360000000106", "field_category": "", "field_confidence_band": "",
            "field_tier": "360003"}
    stranger = create_app(services=admin_services).test_client()
    token = csrf(stranger)
    for path, data in (("/admin/mappings/helpdesk/zendesk", form), ("/admin/model/retrain", {})):
        refused = stranger.post(path, data={**data, "csrf_token": token}, **HTTPS)
        assert refused.status_code == 302 and "/admin/login" in refused.headers["Location"], path
        assert admin.post(path, data=data, **HTTPS).status_code == 400, path  # logged in, but no CSRF token
    assert admin_services.store.configs.latest_version() is None
    assert training_status(admin_services.store) is None
