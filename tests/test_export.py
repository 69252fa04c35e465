"""Corrections export (CLI and /admin/corrections.csv), its filters, and review."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector import create_app
from connector.cli import main
from connector.corrections import COLUMNS
from connector.services import Services
from connector.store import Store
from helpers import cli_environment

DAY = 86400.0
T0 = 1_800_000_000.0


def correction(store: Store, ticket_id: str, seq: int, corrected: str, *, at: float, text: str = "Ticket text",
               predicted: str = "billing", status: str = "pending") -> None:
    store.corrections.add({
        "platform": "zendesk", "ticket_id": ticket_id, "change_id": f"{ticket_id}-{seq}", "seq": seq,
        "text": text, "predicted_category": predicted, "predicted_group_id": "101", "predicted_tier": "local",
        "predicted_confidence": 0.81, "previous_group_id": "101", "corrected_group_id": "103",
        "corrected_category": corrected, "agent_id": "555", "via": "web", "routed_at": at - 600, "rerouted_at": at,
        "status": status, "created_at": at,
    })


@pytest.fixture
def store(services: Services) -> Store:
    s = services.store
    correction(s, "1", 1, "bug_report", at=T0)
    correction(s, "2", 1, "how_to", at=T0 + DAY, text="=HYPERLINK(\"http://evil\")\nwith a newline, and \"quotes\"")
    correction(s, "2", 2, "bug_report", at=T0 + 2 * DAY)  # ping-pong: the final move
    correction(s, "3", 1, "outage_performance", at=T0 + 3 * DAY, predicted="bug_report", status="accepted")
    return s


def parse_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")  # spreadsheets need the byte-order mark to read UTF-8
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, services: Services) -> Any:
    cli_environment(monkeypatch, tmp_path, services.settings.database_url)
    return lambda *args: CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_csv_columns_and_chain(run: Any, store: Store, tmp_path: Path) -> None:
    result = run("corrections", "export", "--output", str(tmp_path / "c.csv"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "c.csv").read_text(encoding="utf-8")
    rows = parse_csv(text)
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["ticket_id"], r["seq"], r["is_final"]) for r in rows] == [
        ("1", "1", "True"), ("2", "1", "False"), ("2", "2", "True"), ("3", "1", "True")]
    assert [r["label"] for r in rows] == ["bug_report", "bug_report", "bug_report", "outage_performance"]
    assert rows[0]["seconds_after_routing"] == "600.0" and rows[0]["rerouted_at"] == "2027-01-15T08:00:00+00:00"
    # A cell a spreadsheet would run as a formula is defused; newlines and quotes survive.
    assert rows[1]["text"].startswith("'=HYPERLINK") and "newline, and \"quotes\"" in rows[1]["text"]


@pytest.mark.parametrize(("args", "tickets"), [
    (("--since", "2027-01-16"), ["2", "3"]),
    (("--since", "2027-01-16", "--until", "2027-01-17T09:00:00+00:00"), ["2"]),
    (("--category", "outage_performance"), ["3"]),
    (("--category", "how_to"), ["2"]),
    (("--status", "accepted"), ["3"]),
    (("--status", "rejected"), []),
])
def test_filters(run: Any, store: Store, args: tuple[str, ...], tickets: list[str]) -> None:
    result = run("corrections", "export", "--format", "jsonl", *args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert sorted({r["ticket_id"] for r in rows}) == tickets
    assert all(set(r) == set(COLUMNS) for r in rows)


def test_bad_dates_are_a_usage_error(run: Any, store: Store) -> None:
    result = run("corrections", "export", "--since", "last tuesday")
    assert result.exit_code == 2 and "ISO 8601" in result.output


def test_review_from_the_cli(run: Any, store: Store) -> None:
    pending = store.corrections.find(status="pending")
    ids = [str(r["id"]) for r in pending if r["ticket_id"] == "2"]
    assert run("corrections", "accept", ids[-1], "--by", "lead@acme").exit_code == 0
    assert run("corrections", "reject", ids[0]).exit_code == 0
    result = run("corrections", "accept", ids[-1], "--label", "not_a_category")
    assert result.exit_code == 2 and "not a category" in result.output
    assert run("corrections", "accept", "9999").exit_code == 1
    by_id = {r["id"]: r for r in store.corrections.find()}
    assert by_id[int(ids[-1])]["status"] == "accepted" and by_id[int(ids[-1])]["reviewed_by"] == "lead@acme"
    assert by_id[int(ids[0])]["status"] == "rejected"
    listed = run("corrections", "list", "--status", "accepted").output
    assert "#2 move 2" in listed and "#3 move 1" in listed
    # Only the accepted final move of a chain, with its text, is learned.
    learned = sorted((text, label) for text, label, _ in store.corrections.accepted())
    assert learned == [("Ticket text", "bug_report"), ("Ticket text", "outage_performance")]


# --- the same data at /admin/corrections.csv -------------------------------------------------------

@pytest.fixture
def admin(make_services: Any) -> Any:
    services = make_services(deskroute_admin_password="correct horse battery staple")
    correction(services.store, "9", 1, "bug_report", at=T0)
    return create_app(services=services).test_client()


def login(client: Any, password: str = "correct horse battery staple") -> Any:
    page = client.get("/admin/login", base_url="https://localhost")
    token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    return client.post("/admin/login", data={"password": password, "csrf_token": token},
                       base_url="https://localhost")


def test_admin_csv_needs_a_login(admin: Any) -> None:
    response = admin.get("/admin/corrections.csv", base_url="https://localhost")
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]
    assert login(admin).status_code == 302
    response = admin.get("/admin/corrections.csv?status=pending", base_url="https://localhost")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    [row] = parse_csv(response.get_data(as_text=True))
    assert row["ticket_id"] == "9" and row["corrected_category"] == "bug_report"
    assert admin.get("/admin/corrections.csv?since=yesterday", base_url="https://localhost").status_code == 400
