"""The decision written into ticket fields (each helpdesk mapping's `fields:`), against both loopback fakes:
in the same write as group and tags, never twice, never holding up a routing, and checked by doctor."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_contract import (
    check_duplicates_and_updates_never_write_again,
    check_killed_after_the_write_does_not_write_again,
)

from connector.doctor import diagnose
from connector.mappings import possible_field_values
from connector.models import ROUTED_TAG, RoutingDecision
from helpdesks import DESCRIPTION, SUBJECT, Env, Helpdesk, mapped_route
from helpers import PROJECT, drain
from platforms.base import PlatformError

# The fields each helpdesk's admin created for Deskroute: key -> (field id, type), in the helpdesk's own terms.
FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "zendesk": {"category": ("360001234567", "tagger"), "confidence_band": ("360001234568", "text"),
                "tier": ("360001234569", "tagger")},
    "freshdesk": {"category": ("cf_deskroute_category", "custom_dropdown"),
                  "confidence_band": ("cf_deskroute_confidence", "custom_text"),
                  "tier": ("cf_deskroute_tier", "custom_dropdown")},
}
TEXT = {"zendesk": "text", "freshdesk": "custom_text"}


def create_field(helpdesk: Helpdesk, field_id: str, kind: str, options: list[str]) -> None:
    """An admin creates the field in the helpdesk (a drop-down with these option values)."""
    if helpdesk.name == "zendesk":
        helpdesk.fake.add_field(int(field_id), field_id, type=kind, options=options)
    else:
        helpdesk.fake.add_field(field_id, field_id, type=kind, choices=options)


def set_up_fields(helpdesk: Helpdesk, env_taxonomy: Any, *, skip: str = "", leave_out: str = "") -> None:
    """Create every field of FIELDS in the fake, except `skip`; a drop-down lacks the option `leave_out`."""
    for key, (field_id, kind) in FIELDS[helpdesk.name].items():
        if key != skip:
            create_field(helpdesk, field_id, kind,
                         [v for v in possible_field_values(key, env_taxonomy) if v != leave_out])


def mappings_with(tmp_path: Path, name: str, fields: dict[str, str]) -> Path:
    """A copy of the default mappings whose <name>.yaml sets `fields:`."""
    target = tmp_path / "configured"
    shutil.copytree(PROJECT / "mappings", target)
    path = target / f"{name}.yaml"
    block = "fields:\n" + "".join(f"  {key}: {value}\n" for key, value in fields.items())
    path.write_text(path.read_text().replace("\ntriage:\n", f"\n{block}\ntriage:\n", 1))
    return target


def configured(name: str) -> dict[str, str]:
    return {key: field_id for key, (field_id, _) in FIELDS[name].items()}


@pytest.fixture
def fields_env(make_env: Callable[..., Env], helpdesk: Helpdesk, tmp_path: Path) -> Env:
    """Deskroute with every field of FIELDS in the mapping, and the helpdesk with every field and option."""
    env = make_env(deskroute_mappings_dir=mappings_with(tmp_path, helpdesk.name, configured(helpdesk.name)))
    set_up_fields(helpdesk, env.services.taxonomy)
    return env


def stored(env: Env, ticket_id: int, field_id: str) -> Any:
    """A field's value on the ticket, as the helpdesk keeps it."""
    if env.name == "zendesk":
        return env.helpdesk.fake.field_value(ticket_id, int(field_id))
    return env.helpdesk.fake.tickets[ticket_id]["custom_fields"].get(field_id)


def sent_fields(env: Env, ticket_id: int) -> list[Any]:
    """The custom fields of each update request that reached the helpdesk (accepted or not)."""
    if env.name == "zendesk":
        return [u.get("custom_fields") for u in env.helpdesk.fake.updates(ticket_id)]
    return [body.get("custom_fields") for body in env.helpdesk.fake.calls("PUT", rf"/api/v2/tickets/{ticket_id}")]


def written_fields(env: Env, ticket_id: int) -> list[Any]:
    """The custom fields of each update the helpdesk accepted."""
    return [change.get("custom_fields") for change in env.helpdesk.fake.applied.get(ticket_id, [])]


def decision(env: Env, ticket_id: int) -> RoutingDecision:
    record = env.services.store.tickets.get(env.name, str(ticket_id))
    assert record is not None and record.decision is not None
    return record.decision


# --- writing ---------------------------------------------------------------------------------------

def test_the_decision_lands_in_the_fields_in_the_same_write_as_group_and_tags(fields_env: Env) -> None:
    env = fields_env
    env.create(31)
    drain(env.services)
    [write] = env.helpdesk.writes(31)  # one update: group, tags, priority and the fields together
    assert write.group_id == str(mapped_route(env.name, "billing")["group_id"])
    ids = configured(env.name)
    assert stored(env, 31, ids["category"]) == "deskroute_billing"
    assert stored(env, 31, ids["tier"]) == "deskroute_tier_rules"
    band = stored(env, 31, ids["confidence_band"])
    assert band in possible_field_values("confidence_band", env.services.taxonomy)
    # Each field holds the very tag the ticket got for it.
    assert {"deskroute_billing", "deskroute_tier_rules", band} <= set(write.tags)
    assert decision(env, 31).fields == {ids["category"]: "deskroute_billing", ids["confidence_band"]: band,
                                        ids["tier"]: "deskroute_tier_rules"}
    assert env.events()[0]["state"] == "done"


def test_a_triaged_ticket_gets_needs_triage_in_the_category_field(fields_env: Env) -> None:
    env = fields_env
    env.helpdesk.add_ticket(32, subject="Help", description="Our projects were deleted overnight", tags=[])
    env.post(*env.helpdesk.created_webhook(32, env.clock))
    drain(env.services)
    assert env.events()[0]["state"] == "triage"  # the data-loss guardrail
    assert stored(env, 32, configured(env.name)["category"]) == "deskroute_needs_triage"
    assert stored(env, 32, configured(env.name)["tier"]) == "deskroute_tier_rules"


def test_fields_are_never_written_twice(fields_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = fields_env
    check_duplicates_and_updates_never_write_again(env)
    check_killed_after_the_write_does_not_write_again(env, monkeypatch)
    assert len(written_fields(env, 12)) == 1 and len(written_fields(env, 19)) == 1
    assert stored(env, 19, configured(env.name)["category"]) == "deskroute_billing"


def test_a_write_that_timed_out_after_it_landed_is_not_repeated(fields_env: Env) -> None:
    env = fields_env
    method, path = env.helpdesk.write_calls(33)[0]
    env.helpdesk.fake.slow_next(1.0, method=method, path=path)  # longer than the 0.5 s client timeout
    env.create(33)
    drain(env.services)
    [fields] = written_fields(env, 33)
    assert fields and len(env.helpdesk.writes(33)) == 1
    assert stored(env, 33, configured(env.name)["category"]) == "deskroute_billing"
    assert env.events()[0]["state"] == "done"


# --- what the helpdesk won't take --------------------------------------------------------------------

@pytest.mark.parametrize("helpdesk", ["freshdesk"], indirect=True)  # Zendesk ignores it (the next test)
def test_freshdesk_refuses_an_unknown_field_with_a_clear_error_that_quotes_no_ticket_text(
        make_env: Callable[..., Env]) -> None:
    env = make_env()
    env.helpdesk.add_ticket(34, subject=SUBJECT, description=DESCRIPTION, tags=[])
    platform = env.services.platforms["freshdesk"]
    ticket = platform.fetch_ticket("34")
    route = mapped_route("freshdesk", "billing")
    wanted = RoutingDecision(category="billing", group_id=str(route["group_id"]), tags=[ROUTED_TAG], priority="normal",
                             note=f"Deskroute routed this ticket to billing. {SUBJECT}", triage=False, tier="rules",
                             confidence=0.95, reason="r", fields={"cf_no_such_field": "deskroute_billing"})
    with pytest.raises(PlatformError) as refused:
        platform.apply(ticket, wanted)
    error = str(refused.value)
    assert not refused.value.retryable and refused.value.status == 400
    assert "freshdesk refused ticket field cf_no_such_field" in error and "invalid_field" not in error
    assert "Unexpected/invalid field in request" in error and "freshdesk.yaml" in error
    assert SUBJECT not in error and DESCRIPTION not in error and "Invoice" not in error
    assert env.helpdesk.fake.applied.get(34) is None and env.helpdesk.notes(34) == []


@pytest.mark.parametrize("problem", ["missing field", "missing option"])
def test_a_field_the_helpdesk_wont_take_never_holds_up_the_routing(
        make_env: Callable[..., Env], helpdesk: Helpdesk, tmp_path: Path, problem: str,
        caplog: pytest.LogCaptureFixture) -> None:
    ids = configured(helpdesk.name)
    env = make_env(deskroute_mappings_dir=mappings_with(tmp_path, helpdesk.name, ids))
    if problem == "missing field":
        set_up_fields(helpdesk, env.services.taxonomy, skip="category")
    else:
        set_up_fields(helpdesk, env.services.taxonomy, leave_out="deskroute_billing")
    caplog.set_level(logging.WARNING)
    env.create(35)
    drain(env.services)
    [write] = env.helpdesk.writes(35)  # routed to billing's group all the same, not sent to triage
    assert write.group_id == str(mapped_route(env.name, "billing")["group_id"]) and "deskroute_billing" in write.tags
    assert env.events()[0]["state"] == "done" and len(env.helpdesk.notes(35)) == 1
    assert stored(env, 35, ids["tier"]) in (None, "deskroute_tier_rules")
    if env.name == "freshdesk":  # refused (400): written again, without the fields
        assert [bool(sent) for sent in sent_fields(env, 35)] == [True, False]
        [row] = env.services.store.tickets.execute("SELECT last_error FROM tickets WHERE ticket_id = '35'")
        assert "freshdesk refused ticket field cf_deskroute_category" in row["last_error"]  # shown to the admin
        assert decision(env, 35).fields == {} and not decision(env, 35).triage
    else:  # 200, the field silently ignored: one write, and a warning naming the field
        assert len(sent_fields(env, 35)) == 1 and stored(env, 35, ids["category"]) is None
        assert stored(env, 35, ids["tier"]) == "deskroute_tier_rules"  # the others landed
        [warning] = [r for r in caplog.records if "zendesk ignored ticket field" in r.getMessage()]
        assert warning.field_ids == ids["category"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("helpdesk", ["freshdesk"], indirect=True)  # Freshdesk names each refused field
def test_a_refusal_that_names_none_of_the_fields_goes_straight_to_triage(
        fields_env: Env) -> None:
    env = fields_env
    billing = int(mapped_route(env.name, "billing")["group_id"])
    env.helpdesk.remove_group(billing)  # deleted by an admin: the 400 names group_id, none of the fields
    env.create(38)
    drain(env.services)
    puts = env.helpdesk.fake.calls("PUT", r"/api/v2/tickets/38")
    # The routing with its fields, then the triage fallback: no second try of the same group without fields.
    triage = int(env.services.mappings[env.name].triage.group_id)
    assert [put["group_id"] for put in puts] == [billing, triage]
    assert puts[0].get("custom_fields") and not puts[1].get("custom_fields")
    assert env.events()[0]["state"] == "triage" and decision(env, 38).triage
    [row] = env.services.store.tickets.execute("SELECT last_error FROM tickets WHERE ticket_id = '38'")
    assert "group_id: There is no group" in row["last_error"] and "without ticket fields" not in row["last_error"]


@pytest.mark.parametrize("helpdesk", ["zendesk"], indirect=True)  # Freshdesk names its fields
def test_zendesk_leaves_out_a_field_id_that_cannot_be_a_zendesk_field(
        make_env: Callable[..., Env], helpdesk: Helpdesk, tmp_path: Path) -> None:
    env = make_env(deskroute_mappings_dir=mappings_with(tmp_path, "zendesk", {"category": "cf_deskroute_category",
                                                                              "tier": "360001234569"}))
    set_up_fields(helpdesk, env.services.taxonomy)
    env.create(36)
    drain(env.services)
    assert sent_fields(env, 36) == [[{"id": 360001234569, "value": "deskroute_tier_rules"}]]
    assert env.events()[0]["state"] == "done"


# --- doctor ------------------------------------------------------------------------------------------

def field_lines(env: Env) -> list[tuple[bool, str]]:
    return [(f.ok, f.line) for f in diagnose(env.services) if "fields." in f.line or "fields:" in f.line]


def test_doctor_passes_fields_that_exist_with_every_option(fields_env: Env) -> None:
    lines = field_lines(fields_env)
    assert len(lines) == 3 and all(ok for ok, _ in lines), lines
    assert any(line.endswith(f"fields.category writes to {configured(fields_env.name)['category']} "
                             f"({configured(fields_env.name)['category']})") for _, line in lines)


def test_doctor_names_a_missing_field_and_a_missing_option(make_env: Callable[..., Env], helpdesk: Helpdesk,
                                                           tmp_path: Path) -> None:
    ids = configured(helpdesk.name)
    env = make_env(deskroute_mappings_dir=mappings_with(tmp_path, helpdesk.name, ids))
    set_up_fields(helpdesk, env.services.taxonomy, skip="tier", leave_out="deskroute_needs_triage")
    problems = [line for ok, line in field_lines(env) if not ok]
    assert len(problems) == 2, problems
    missing, option = sorted(problems, key=lambda line: "tier" not in line)
    where = f"{helpdesk.name}.yaml"
    assert missing.startswith(f"{helpdesk.name}: ") and where in missing
    assert f"fields.tier {ids['tier']} is not a ticket field in {helpdesk.name}; pick one of:" in missing
    assert f"{ids['category']} ({ids['category']})" in missing  # the fields it could use instead
    assert where in option and f"fields.category {ids['category']}" in option
    assert "has no option with the value deskroute_needs_triage" in option
    assert "deskroute_billing" not in option  # only what is missing


def test_doctor_refuses_a_field_that_cannot_take_text(make_env: Callable[..., Env], helpdesk: Helpdesk,
                                                       tmp_path: Path) -> None:
    field_id, kind = ("360009999999", "checkbox") if helpdesk.name == "zendesk" else ("cf_vip", "custom_checkbox")
    env = make_env(deskroute_mappings_dir=mappings_with(tmp_path, helpdesk.name, {"confidence_band": field_id}))
    create_field(helpdesk, field_id, kind, [])
    [(ok, line)] = field_lines(env)
    assert not ok and f"fields.confidence_band {field_id} ({field_id}) is a {kind} field" in line


def test_doctor_accepts_a_text_field_for_any_value(make_env: Callable[..., Env], helpdesk: Helpdesk,
                                                    tmp_path: Path) -> None:
    field_id = FIELDS[helpdesk.name]["category"][0]
    env = make_env(deskroute_mappings_dir=mappings_with(tmp_path, helpdesk.name, {"category": field_id}))
    create_field(helpdesk, field_id, TEXT[helpdesk.name], [])
    assert [ok for ok, _ in field_lines(env)] == [True]
    env.create(37)
    drain(env.services)
    assert stored(env, 37, field_id) == "deskroute_billing"


def test_listed_fields_say_what_a_write_takes(fields_env: Env) -> None:
    fields = {f.id: f for f in fields_env.services.platforms[fields_env.name].list_fields()}  # type: ignore[attr-defined]
    ids = configured(fields_env.name)
    category, band = fields[ids["category"]], fields[ids["confidence_band"]]
    assert category.kind == "dropdown" and "deskroute_needs_triage" in category.options
    assert band.kind == "text" and band.options == []
    assert any(f.kind == "other" for f in fields.values())  # the system/default fields are listed too
