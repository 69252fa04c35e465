"""`deskroute install|uninstall|doctor` against `responses`, with the request and answer shapes of
../shared/fixtures/zendesk/ (webhook creation, signing secret, trigger creation)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from click.testing import CliRunner, Result

from connector.cli import main
from databases import database_url
from helpers import FIXTURES, PROJECT, cli_environment, token_answer

API = "https://acme.zendesk.com/api/v2"
PUBLIC = "https://deskroute.acme.test"
WEBHOOK = json.loads((FIXTURES / "zendesk" / "webhook_create_response_201.json").read_text())["webhook"]
SECRET = json.loads((FIXTURES / "zendesk" / "webhook_signing_secret_response.json").read_text())["signing_secret"]
TRIGGER = json.loads((FIXTURES / "zendesk" / "trigger_create_response_201.json").read_text())["trigger"]


class ZendeskAdmin:
    """The webhooks and triggers endpoints, with state, answering as the recorded responses do."""

    def __init__(self, mock: responses.RequestsMock):
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.triggers: dict[int, dict[str, Any]] = {}
        self.writes: list[tuple[str, str, Any]] = []
        self._ids = iter(range(6164111062810, 6164111062900))
        mock.add_callback("GET", re.compile(rf"{API}/webhooks(\?.*)?$"), self.list_webhooks)
        mock.add_callback("POST", f"{API}/webhooks", self.create_webhook)
        mock.add_callback("GET", re.compile(rf"{API}/webhooks/[^/]+/signing_secret"), self.secret)
        mock.add_callback("DELETE", re.compile(rf"{API}/webhooks/[^/]+$"), self.delete_webhook)
        mock.add_callback("PUT", re.compile(rf"{API}/webhooks/[^/]+$"), self.update_webhook)
        mock.add_callback("GET", re.compile(rf"{API}/triggers\.json.*"), self.list_triggers)
        mock.add_callback("POST", f"{API}/triggers.json", self.create_trigger)
        mock.add_callback("PUT", re.compile(rf"{API}/triggers/\d+\.json"), self.update_trigger)
        mock.add_callback("DELETE", re.compile(rf"{API}/triggers/\d+\.json"), self.delete_trigger)
        groups = [{"id": gid, "name": f"Group {gid}"} for gid in range(360000000100, 360000000108)]
        mock.get(re.compile(rf"{API}/groups\.json.*"), json={"groups": groups, "next_page": None, "count": 8,
                                                             "meta": {"has_more": False}, "links": {"next": None}})

    def _json(self, status: int, body: Any) -> tuple[int, dict[str, str], str]:
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    def list_webhooks(self, request: Any) -> tuple[int, dict[str, str], str]:
        return self._json(200, {"webhooks": list(self.webhooks.values()), "meta": {"has_more": False},
                                "links": {"next": None, "prev": None}})

    def create_webhook(self, request: Any) -> tuple[int, dict[str, str], str]:
        sent = json.loads(request.body)["webhook"]
        self.writes.append(("POST", "webhook", sent))
        hook = {**WEBHOOK, **sent, "id": WEBHOOK["id"]}
        self.webhooks[hook["id"]] = hook
        return self._json(201, {"webhook": hook})

    def update_webhook(self, request: Any) -> tuple[int, dict[str, str], str]:
        sent = json.loads(request.body)["webhook"]
        self.writes.append(("PUT", "webhook", sent))
        self.webhooks[request.url.rsplit("/", 1)[1]].update(sent)
        return 204, {}, ""

    def secret(self, request: Any) -> tuple[int, dict[str, str], str]:
        return self._json(200, {"signing_secret": SECRET})

    def delete_webhook(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.writes.append(("DELETE", "webhook", request.url))
        self.webhooks.pop(request.url.rsplit("/", 1)[1], None)
        return 204, {}, ""

    def list_triggers(self, request: Any) -> tuple[int, dict[str, str], str]:
        return self._json(200, {"triggers": list(self.triggers.values()), "next_page": None,
                                "count": len(self.triggers), "meta": {"has_more": False}, "links": {"next": None}})

    def create_trigger(self, request: Any) -> tuple[int, dict[str, str], str]:
        sent = json.loads(request.body)["trigger"]
        self.writes.append(("POST", "trigger", sent))
        trigger = {**TRIGGER, **sent, "id": next(self._ids), "active": True}
        self.triggers[trigger["id"]] = trigger
        return self._json(201, {"trigger": trigger})

    def update_trigger(self, request: Any) -> tuple[int, dict[str, str], str]:
        trigger_id = int(re.search(r"/triggers/(\d+)", request.url).group(1))  # type: ignore[union-attr]
        sent = json.loads(request.body)["trigger"]
        self.writes.append(("PUT", "trigger", sent))
        self.triggers[trigger_id].update(sent)
        return self._json(200, {"trigger": self.triggers[trigger_id]})

    def delete_trigger(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.writes.append(("DELETE", "trigger", request.url))
        self.triggers.pop(int(re.search(r"/triggers/(\d+)", request.url).group(1)), None)  # type: ignore[union-attr]
        return 204, {}, ""


@pytest.fixture
def zendesk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ZendeskAdmin]:
    cli_environment(monkeypatch, tmp_path, database_url(tmp_path, "i.db"), ZENDESK_SUBDOMAIN="acme",
                    ZENDESK_OAUTH_CLIENT_ID="deskroute", ZENDESK_OAUTH_CLIENT_SECRET="client-secret")
    # No ZENDESK_WEBHOOK_SECRET: README's short way sets only the sign-in, and install fetches the secret.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post("https://acme.zendesk.com/oauth/tokens", json=token_answer(), status=201)
        yield ZendeskAdmin(mock)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_install_creates_the_webhook_and_triggers_once(zendesk: ZendeskAdmin, tmp_path: Path) -> None:
    first = run("install", "zendesk", "--url", PUBLIC, "--env-file", str(tmp_path / ".env"))
    assert first.exit_code == 0, first.output
    [hook] = [w for _, kind, w in zendesk.writes if kind == "webhook"]
    assert hook == {"name": "Deskroute", "endpoint": f"{PUBLIC}/webhooks/zendesk", "http_method": "POST",
                    "request_format": "json", "status": "active", "subscriptions": ["conditional_ticket_events"]}
    triggers = {t["title"]: t for _, kind, t in zendesk.writes if kind == "trigger"}
    created = triggers["Deskroute: route new tickets"]
    assert {"field": "update_type", "operator": "is", "value": "Create"} in created["conditions"]["all"]
    [action] = created["actions"]
    assert action["field"] == "notification_webhook" and action["value"][0] == WEBHOOK["id"]
    assert json.loads(action["value"][1]) == {"ticket_id": "{{ticket.id}}", "event": "ticket.created"}
    rerouted = triggers["Deskroute: record re-routes"]
    assert {"field": "group_id", "operator": "changed"} in rerouted["conditions"]["all"]
    assert {"field": "via_id", "operator": "is_not", "value": "5"} in rerouted["conditions"]["all"]  # loop guard
    assert json.loads(rerouted["actions"][0]["value"][1])["event"] == "ticket.group_changed"
    assert f"ZENDESK_WEBHOOK_SECRET={SECRET['secret']}" in (tmp_path / ".env").read_text()

    writes = len(zendesk.writes)
    again = run("install", "zendesk", "--url", PUBLIC)
    assert again.exit_code == 0 and len(zendesk.writes) == writes  # nothing created twice
    assert again.output.count(" exists  ") == 3


def test_dry_run_plans_and_changes_nothing(zendesk: ZendeskAdmin) -> None:
    result = run("install", "zendesk", "--url", PUBLIC, "--dry-run")
    assert result.exit_code == 0 and zendesk.writes == []
    assert "POST /api/v2/webhooks" in result.output and result.output.count("POST /api/v2/triggers") == 2


def test_a_moved_endpoint_updates_the_webhook(zendesk: ZendeskAdmin) -> None:
    run("install", "zendesk", "--url", PUBLIC)
    zendesk.writes.clear()
    zendesk.webhooks[WEBHOOK["id"]]["endpoint"] = "https://old.example/webhooks/zendesk"
    result = run("install", "zendesk", "--url", PUBLIC, "--dry-run")
    assert "plan  webhook Deskroute\n         PUT /api/v2/webhooks/" in result.output and zendesk.writes == []
    assert run("install", "zendesk", "--url", PUBLIC).exit_code == 0
    assert zendesk.webhooks[WEBHOOK["id"]]["endpoint"] == f"{PUBLIC}/webhooks/zendesk"
    assert [(method, kind) for method, kind, _ in zendesk.writes] == [("PUT", "webhook")]


def test_uninstall_removes_what_install_created(zendesk: ZendeskAdmin) -> None:
    run("install", "zendesk", "--url", PUBLIC)
    result = run("uninstall", "zendesk")
    assert result.exit_code == 0
    assert zendesk.triggers == {} and zendesk.webhooks == {}
    assert run("uninstall", "zendesk").output.strip() == "nothing to remove"


def test_doctor_reports_each_problem_on_one_line_and_fails(zendesk: ZendeskAdmin) -> None:
    result = run("doctor")
    assert result.exit_code == 1
    fixes = [line for line in result.output.splitlines() if line.startswith("FIX")]
    assert any("no webhook named Deskroute: run `deskroute install zendesk" in line for line in fixes)
    assert any("model: none trained yet" in line for line in fixes)
    assert not any("group_id" in line for line in fixes)  # every mapped group exists (ids 100-107)


def test_doctor_passes_after_install_and_a_first_model(zendesk: ZendeskAdmin, tmp_path: Path) -> None:
    import shutil

    from connector.feedback import ensure_model
    from connector.services import Services
    from connector.settings import Settings

    services = Services(Settings())
    ensure_model(services.store, services.taxonomy, services.settings)
    before = run("doctor")  # README's short way: the sign-in set, the webhook secret not yet
    assert before.exit_code == 1
    assert "zendesk: ZENDESK_WEBHOOK_SECRET is not set, so every webhook is refused" in before.output
    run("install", "zendesk", "--url", PUBLIC, "--env-file", ".env")  # fetches it into .env
    result = run("doctor")
    assert result.exit_code == 0, result.output
    assert "ok   zendesk: webhook and rules installed" in result.output
    assert "mappings in " in result.output  # no stored version yet: the files are what runs

    edited = tmp_path / "edited"
    shutil.copytree(PROJECT / "mappings", edited)
    (edited / "zendesk.yaml").write_text((edited / "zendesk.yaml").read_text() + "# reviewed\n")
    imported = run("config", "import", str(edited))
    assert imported.exit_code == 0, imported.output
    after = run("doctor").output
    assert "configuration v1 stored in the database" in after and "are ignored" in after


def test_doctor_names_a_mapped_group_that_does_not_exist(zendesk: ZendeskAdmin, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    shutil.copytree(PROJECT / "mappings", tmp_path / "m")
    path = tmp_path / "m" / "zendesk.yaml"
    path.write_text(path.read_text().replace("360000000104", "999"))
    monkeypatch.setenv("DESKROUTE_MAPPINGS_DIR", str(tmp_path / "m"))
    result = run("doctor")
    [line] = [line for line in result.output.splitlines() if "group_id" in line]
    assert line.startswith("FIX  zendesk:") and "categories.outage_performance.group_id 999 is not a group" in line
    assert "pick one of: 360000000100 (Group 360000000100)" in line


def test_workers_starting_log_a_mapped_group_the_helpdesk_does_not_have(
        zendesk: ZendeskAdmin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """For whoever never runs doctor: before, the first sign was every such ticket in triage or dead."""
    import logging
    import shutil

    from connector.services import Services
    from connector.settings import Settings

    shutil.copytree(PROJECT / "mappings", tmp_path / "m")
    path = tmp_path / "m" / "zendesk.yaml"
    path.write_text(path.read_text().replace("360000000104", "999"))
    monkeypatch.setenv("DESKROUTE_MAPPINGS_DIR", str(tmp_path / "m"))
    caplog.set_level(logging.WARNING, logger="connector.services")
    Services(Settings()).check_groups()
    [record] = [r for r in caplog.records if "mapped group" in r.getMessage()]
    assert record.levelname == "ERROR" and "deskroute doctor" in record.getMessage()
    assert (record.platform, record.route, record.group_id) == (  # type: ignore[attr-defined]
        "zendesk", "categories.outage_performance", "999")


# --- Freshdesk ---------------------------------------------------------------------------------------

FD = "https://acme.freshdesk.com/api/v2"


@pytest.fixture
def freshdesk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_environment(monkeypatch, tmp_path, database_url(tmp_path, "i.db"), FRESHDESK_DOMAIN="acme",
                    FRESHDESK_API_KEY="key", FRESHDESK_WEBHOOK_SECRET="rule-secret")


def test_freshdesk_install_creates_both_rules_with_the_token_header(freshdesk_env: None) -> None:
    rules: dict[int, list[dict[str, Any]]] = {1: [], 4: []}
    with responses.RequestsMock() as mock:
        for kind in (1, 4):
            mock.add_callback("GET", f"{FD}/automations/{kind}/rules",
                              lambda r, k=kind: (200, {}, json.dumps(rules[k])))
            mock.add_callback("POST", f"{FD}/automations/{kind}/rules",
                              lambda r, k=kind: (rules[k].append({**json.loads(r.body), "id": len(rules[k]) + 1})
                                                 or (201, {}, json.dumps(rules[k][-1]))))
        assert run("install", "freshdesk", "--url", PUBLIC).exit_code == 0
        assert run("install", "freshdesk", "--url", PUBLIC).output.count(" exists  ") == 2
    [created], [updated] = rules[1], rules[4]
    action = created["actions"][0]
    assert action["url"] == f"{PUBLIC}/webhooks/freshdesk" and action["custom_headers"] == {
        "X-Deskroute-Token": "rule-secret"}
    assert json.loads(action["content"]) == {"ticket_id": "{{ticket.id}}", "event": "ticket.created"}
    assert updated["events"] == [{"field_name": "group_id", "from": "--", "to": "--"}]


def test_freshdesk_install_prints_manual_steps_where_the_api_refuses(freshdesk_env: None) -> None:
    with responses.RequestsMock() as mock:
        for kind in (1, 4):
            mock.get(f"{FD}/automations/{kind}/rules", status=403,
                     json={"code": "access_denied", "message": "You are not authorized to perform this action."})
        result = run("install", "freshdesk", "--url", PUBLIC)
    assert result.exit_code == 0
    assert result.output.count(" manual  ") == 2
    assert "Trigger webhook POST https://deskroute.acme.test/webhooks/freshdesk" in result.output
    assert "X-Deskroute-Token: <FRESHDESK_WEBHOOK_SECRET>" in result.output and "rule-secret" not in result.output


@pytest.mark.parametrize("url", ["http://deskroute.acme.test", "ftp://x", "https://", "deskroute.acme.test"])
def test_install_refuses_a_public_url_that_is_not_https(zendesk: ZendeskAdmin, url: str) -> None:
    result = CliRunner().invoke(main, ["install", "zendesk", "--url", url])
    assert result.exit_code == 2 and "must start with https://" in result.output
    assert zendesk.writes == []


def test_install_accepts_plain_http_on_localhost(zendesk: ZendeskAdmin) -> None:
    assert run("install", "zendesk", "--url", "http://127.0.0.1:8000").exit_code == 0


def test_install_keeps_the_secret_private(zendesk: ZendeskAdmin, tmp_path: Path) -> None:
    quiet = run("install", "zendesk", "--url", PUBLIC)
    assert SECRET["secret"] not in quiet.output and "--show-secret" in quiet.output
    assert SECRET["secret"] in run("install", "zendesk", "--url", PUBLIC, "--show-secret").output
    env_file = tmp_path / "new.env"
    run("install", "zendesk", "--url", PUBLIC, "--env-file", str(env_file))
    assert env_file.stat().st_mode & 0o777 == 0o600
    copied = tmp_path / "copied.env"  # made with `cp .env.example .env`: world-readable
    copied.write_text("ZENDESK_SUBDOMAIN=acme\n")
    copied.chmod(0o644)
    run("install", "zendesk", "--url", PUBLIC, "--env-file", str(copied))
    assert copied.stat().st_mode & 0o777 == 0o600 and "ZENDESK_SUBDOMAIN=acme" in copied.read_text()


def test_doctor_calls_a_half_configured_helpdesk_a_problem(zendesk: ZendeskAdmin, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A helpdesk with none of its settings is a choice; with some of them, a mistake to fix."""
    assert "ok   freshdesk: not configured" in run("doctor").output
    monkeypatch.setenv("FRESHDESK_DOMAIN", "acme")
    result = run("doctor")
    assert result.exit_code == 1
    assert "freshdesk: partly configured: set FRESHDESK_API_KEY, FRESHDESK_WEBHOOK_SECRET too" in result.output


def test_doctor_takes_a_webhook_set_up_by_hand_with_event_subscriptions(zendesk: ZendeskAdmin) -> None:
    """README step 4: a webhook subscribed to the two ticket events needs no triggers."""
    zendesk.webhooks[WEBHOOK["id"]] = {**WEBHOOK, "name": "Deskroute", "status": "active", "subscriptions": [
        "zen:event-type:ticket.created", "zen:event-type:ticket.group_assignment_changed"]}
    output = run("doctor").output
    assert "ok   zendesk: webhook and rules installed" in output and "trigger" not in output
    zendesk.webhooks[WEBHOOK["id"]]["subscriptions"] = ["conditional_ticket_events"]  # install's: triggers needed
    assert "trigger 'Deskroute: route new tickets' is missing" in run("doctor").output
