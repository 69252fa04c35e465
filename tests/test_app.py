"""/health and /metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import responses
from prometheus_client.parser import text_string_to_metric_families

from connector import create_app
from connector.scheduler import report_queue_health
from connector.services import Services
from helpers import (
    FIXTURES,
    ZENDESK,
    ZENDESK_HOST,
    FakeClock,
    drain,
    make_settings,
    signed_headers,
    token_answer,
    trigger_body,
    zendesk_ticket,
)


def test_health_without_credentials_reports_zendesk_not_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, zendesk_subdomain="", zendesk_oauth_client_id="",
                             zendesk_oauth_client_secret="", zendesk_webhook_secret="")
    client = create_app(settings).test_client()
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["platforms"]["zendesk"] == {"configured": False, "missing": [
        "ZENDESK_SUBDOMAIN", "ZENDESK_OAUTH_CLIENT_ID"]}  # no client secret: Connect needs none


def test_health_names_only_what_is_missing(tmp_path: Path) -> None:
    client = create_app(make_settings(tmp_path, zendesk_subdomain="")).test_client()
    assert client.get("/health").json["platforms"]["zendesk"]["missing"] == ["ZENDESK_SUBDOMAIN"]


def test_without_its_webhook_secret_zendesk_is_set_up_but_refuses_webhooks_and_says_so(tmp_path: Path) -> None:
    """The sign-in alone makes Zendesk usable (install and Connect need no more, and install fetches the
    secret); until the secret is set, every webhook is refused and /health asks for it."""
    client = create_app(make_settings(tmp_path, zendesk_webhook_secret="")).test_client()
    zendesk = client.get("/health").json
    assert zendesk["platforms"]["zendesk"]["configured"] is True
    assert "ZENDESK_WEBHOOK_SECRET is not set" in zendesk["platforms"]["zendesk"]["webhooks"]
    assert any(line.startswith("zendesk: ZENDESK_WEBHOOK_SECRET is not set") for line in zendesk["attention"])
    body, now = trigger_body(7), FakeClock(time.time())
    for secret in ("", "anything"):  # an empty key signs too: it must not be accepted
        response = client.post("/webhooks/zendesk", data=body, headers=signed_headers(body, now, secret=secret))
        assert response.status_code == 401
    configured = create_app(make_settings(tmp_path, zendesk_webhook_secret="s")).test_client()
    response = configured.post("/webhooks/zendesk", data=body, headers=signed_headers(body, now, secret="s"))
    assert response.status_code == 202  # the same request, once the secret is set


def test_health_is_503_when_the_database_is_gone(client: Any, services: Services, monkeypatch: Any) -> None:
    def broken() -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(services.store, "ping", broken)
    response = client.get("/health")
    assert response.status_code == 503 and response.json["status"] == "unavailable"


def metrics(client: Any) -> dict[str, list[Any]]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.get_data(as_text=True))}


def value(samples: list[Any], name: str, **labels: str) -> float:
    matching = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, samples)
    return matching[0]


def test_metrics_count_events_outcomes_tiers_and_latency(client: Any, services: Services, clock: FakeClock) -> None:
    with responses.RequestsMock() as api:
        api.post(f"{ZENDESK_HOST}/oauth/tokens", json=token_answer(), status=201)
        api.get(f"{ZENDESK}/tickets/7.json",
                json=zendesk_ticket(7, subject="Invoice please", description="Send the invoice"))
        updated = (FIXTURES / "zendesk" / "ticket_update_response_200.json").read_text()
        api.put(f"{ZENDESK}/tickets/7.json", body=updated)
        for body in (trigger_body(7), trigger_body(7), b"garbage"):
            client.post("/webhooks/zendesk", data=body, headers=signed_headers(body, clock))
        clock.advance(0.3)
        drain(services)
    m = metrics(client)
    assert value(m["deskroute_events_received"], "deskroute_events_received_total",
                 platform="zendesk", kind="ticket.created") == 1
    assert value(m["deskroute_events_finished"], "deskroute_events_finished_total",
                 platform="zendesk", state="done", outcome="routed") == 1
    assert value(m["deskroute_decisions"], "deskroute_decisions_total", platform="zendesk", tier="rules") == 1
    latency = m["deskroute_processing_seconds"]
    assert value(latency, "deskroute_processing_seconds_bucket", le="0.25") == 0
    assert value(latency, "deskroute_processing_seconds_bucket", le="0.5") == 1
    assert value(latency, "deskroute_processing_seconds_count") == 1
    requests = m["deskroute_webhook_requests"]
    assert value(requests, "deskroute_webhook_requests_total", platform="zendesk", status="202") == 1
    assert value(requests, "deskroute_webhook_requests_total", platform="zendesk", status="200") == 1
    assert value(requests, "deskroute_webhook_requests_total", platform="zendesk", status="400") == 1
    assert value(m["deskroute_queue_events"], "deskroute_queue_events", state="pending") == 0


def test_queue_health_job_reports_dead_letters(services: Services, caplog: Any) -> None:
    from connector.models import TicketEvent

    services.queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id="9", dedup_key="k"))
    job = services.queue.claim("w")
    assert job is not None
    services.queue.dead_letter(job, error="422 RecordInvalid")
    caplog.set_level("INFO")
    health = report_queue_health(services.store)
    assert health.counts == {"dead": 1}
    assert any(r.levelname == "WARNING" and "dead-lettered" in r.getMessage() for r in caplog.records)


def test_a_dead_letter_shows_in_healths_attention_and_in_a_gauge(client: Any, services: Services,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """At 3 a.m. a monitor needs something to alert on: /health stays 200 (a restart fixes nothing)."""
    from connector.models import TicketEvent

    assert client.get("/health").json["attention"] == []
    assert value(metrics(client)["deskroute_events_dead"], "deskroute_events_dead", platform="zendesk") == 0
    services.queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id="9", dedup_key="k"))
    job = services.queue.claim("w")
    assert job is not None
    services.queue.dead_letter(job, error="422 RecordInvalid")
    health = client.get("/health")
    assert health.status_code == 200 and health.json["status"] == "ok"
    assert health.json["attention"] == [
        "queue: 1 dead-lettered event(s): `deskroute tickets list --state dead` says why"]
    monkeypatch.setattr("connector.metrics.CACHE_SECONDS", 0.0)  # the reading above is cached for 5 s
    m = metrics(client)
    assert value(m["deskroute_events_dead"], "deskroute_events_dead", platform="zendesk") == 1
    assert value(m["deskroute_helpdesk_auth_failing"], "deskroute_helpdesk_auth_failing", platform="zendesk") == 0


def test_scheduler_has_the_queue_health_job(services: Services) -> None:
    from connector.scheduler import init_scheduler

    scheduler = init_scheduler(services)
    assert [job.id for job in scheduler.get_jobs()] == [
        "leadership", "queue_health", "poll_reroutes", "retrain", "purge_text", "suggest"]


def test_a_metrics_token_closes_metrics_and_healths_details(make_services: Any) -> None:
    client = create_app(services=make_services(deskroute_metrics_token="scrape-token-0123")).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123"}).status_code == 200
    assert client.get("/health").json == {"status": "ok"}  # up or not, nothing more
    detailed = client.get("/health", headers={"Authorization": "Bearer scrape-token-0123"}).json
    assert detailed["status"] == "ok" and "platforms" in detailed and "queue" in detailed


def test_scrapes_share_one_reading_of_the_database(client: Any, services: Services,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    readings: list[int] = []
    original = services.store.stats.event_counts
    monkeypatch.setattr(services.store.stats, "event_counts", lambda: readings.append(1) or original())
    for _ in range(20):  # a scraper, or anyone, asking many times a second
        assert client.get("/metrics").status_code == 200
    assert len(readings) == 1


def test_a_database_outage_on_any_page_is_a_503_not_a_500(services: Any, monkeypatch: Any) -> None:
    from connector.store import StoreUnavailable

    def down() -> Any:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(services.store.stats, "event_counts", down)
    response = create_app(services=services).test_client().get("/metrics")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5" and response.is_json
