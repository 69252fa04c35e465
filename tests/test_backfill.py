"""History import through the incremental export APIs, with cursor pagination and a 429 midway."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import responses
from click.testing import CliRunner

from connector.cli import main
from connector.history import backfill
from connector.services import Services
from helpers import FIXTURES, ZENDESK, ZENDESK_HOST, cli_environment, make_settings, token_answer
from platforms.freshdesk import FreshdeskPlatform

EXPORT = re.compile(rf"{ZENDESK}/incremental/tickets/cursor\.json.*")


def zendesk_ticket(ticket_id: int, status: str, group_id: int | None, subject: str) -> dict[str, Any]:
    ticket = json.loads((FIXTURES / "zendesk" / "oas_ticket_show_example.json").read_text())["ticket"]
    ticket.update(id=ticket_id, status=status, group_id=group_id, subject=subject,
                  description=f"{subject}. Reach me at jo@example.com", updated_at="2026-10-01T10:00:00Z")
    return ticket


def page(tickets: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
    after = f"{ZENDESK}/incremental/tickets/cursor.json?cursor={cursor}" if cursor else None
    return {"tickets": tickets, "after_url": after, "after_cursor": cursor, "before_url": None,
            "before_cursor": None, "end_of_stream": cursor is None}


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def zendesk_export(api: responses.RequestsMock) -> responses.RequestsMock:
    api.post(f"{ZENDESK_HOST}/oauth/tokens", json=token_answer(), status=201)
    return api


def export_calls(api: responses.RequestsMock) -> list[Any]:
    return [c for c in api.calls if "/incremental/" in c.request.url]


def test_zendesk_backfill_follows_the_cursor_and_waits_out_a_429(services: Services,
                                                                  zendesk_export: responses.RequestsMock) -> None:
    api = zendesk_export
    api.get(EXPORT, json=page([zendesk_ticket(1, "solved", 360000000103, "Export button does nothing"),
                               zendesk_ticket(2, "open", 360000000103, "Still broken"),
                               zendesk_ticket(3, "closed", 999, "Group no category maps to")], "c2"))
    api.get(EXPORT, status=429, headers={"Retry-After": "7"}, json={"error": "TooManyRequests"})
    api.get(EXPORT, json=page([zendesk_ticket(4, "solved", 360000000104, "Site down for everyone"),
                               zendesk_ticket(5, "closed", 360000000102, "Locked out of my account")], None))
    seen: list[tuple[int, int]] = []
    report = backfill(services, "zendesk", days=90, progress=lambda read, kept: seen.append((read, kept)))

    assert (report.read, report.kept, report.skipped_open, report.skipped_unmapped) == (5, 3, 1, 1)
    calls = export_calls(api)
    first = parse_qs(urlparse(calls[0].request.url).query)
    assert "start_time" in first and int(first["start_time"][0]) > 1_700_000_000
    assert [parse_qs(urlparse(c.request.url).query).get("cursor") for c in calls[1:]] == [["c2"], ["c2"]]
    assert services.sleeps == [7.0]  # type: ignore[attr-defined]
    history = services.store.corrections.history()
    assert [label for _, label, _ in history] == ["bug_report", "outage_performance", "account_access"]
    assert all("jo@example.com" not in text and "[EMAIL]" in text for text, _, _ in history)
    assert seen[-1] == (5, 3)


def test_backfilled_history_joins_the_feedback_dataset(services: Services,
                                                       zendesk_export: responses.RequestsMock) -> None:
    api = zendesk_export
    from connector.feedback import feedback_examples

    api.get(EXPORT, json=page([zendesk_ticket(7, "solved", 360000000103, "Export button does nothing")], None))
    backfill(services, "zendesk", days=30)
    examples = feedback_examples(services.store, services.taxonomy, services.settings, now=0)
    assert examples.counts()["history"] == 1
    assert examples.labels[examples.sources.index("history")] == "bug_report"


def freshdesk_ticket(ticket_id: int, status: int, group_id: int) -> dict[str, Any]:
    ticket = json.loads((FIXTURES / "freshdesk" / "ticket_1.json").read_text())
    ticket.update(id=ticket_id, status=status, group_id=group_id, subject=f"Ticket {ticket_id}",
                  description_text="Please resend the invoice", updated_at="2026-10-01T10:00:00Z")
    return ticket


def test_freshdesk_backfill_pages_through_updated_tickets(tmp_path: Path, clock: Any,
                                                           api: responses.RequestsMock) -> None:
    settings = make_settings(tmp_path, freshdesk_domain="acme", freshdesk_api_key="k", freshdesk_webhook_secret="s")
    waits: list[float] = []
    services = Services(settings, platforms={"freshdesk": FreshdeskPlatform.from_settings(settings,
                                                                                          sleep=waits.append)})
    url = re.compile(r"https://acme\.freshdesk\.com/api/v2/tickets\?.*")
    api.get(url, json=[freshdesk_ticket(n, 4 if n % 2 else 2, 103000000103) for n in range(1, 101)])
    api.get(url, status=429, headers={"Retry-After": "3"}, json={})
    api.get(url, json=[freshdesk_ticket(101, 5, 103000000104)])
    report = backfill(services, "freshdesk", days=90)
    assert (report.read, report.kept, report.skipped_open) == (101, 51, 50)
    queries = [parse_qs(urlparse(c.request.url).query) for c in api.calls]
    assert [q["page"] for q in queries] == [["1"], ["2"], ["2"]]
    assert queries[0]["include"] == ["description"] and "updated_since" in queries[0]
    assert waits == [3.0]


def test_backfill_cli(services: Services, zendesk_export: responses.RequestsMock, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    api = zendesk_export
    cli_environment(monkeypatch, tmp_path, services.settings.database_url, ZENDESK_SUBDOMAIN="acme",
                    ZENDESK_OAUTH_CLIENT_ID="deskroute", ZENDESK_OAUTH_CLIENT_SECRET="s", ZENDESK_WEBHOOK_SECRET="s")
    api.get(EXPORT, json=page([zendesk_ticket(1, "solved", 360000000103, "Export button does nothing")], None))
    result = CliRunner().invoke(main, ["backfill", "zendesk", "--days", "30"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "imported 1 of 1 tickets" in result.output and "1 tickets read, 1 kept" in result.output
    assert CliRunner().invoke(main, ["backfill", "freshdesk"]).exit_code == 1  # not configured
    assert CliRunner().invoke(main, ["backfill", "helpscout"]).exit_code == 2
