"""Data retention: ticket text is forgotten after the retention period; redacted corrections stay."""

from __future__ import annotations

import json
from collections.abc import Callable

import responses

from connector.scheduler import init_scheduler, purge_job
from connector.services import Services
from connector.store import PURGED_NOTE, PURGED_TEXT
from helpers import VAGUE_TICKET, FakeClock, claude_answer, route_new_ticket
from platforms.fakes.claude import FakeClaude

DAY = 86_400


def ticket_row(services: Services, ticket_id: str) -> dict:
    row = services.store.db.execute("SELECT training_text, classification, decision FROM tickets"
                                    " WHERE ticket_id = :t", {"t": ticket_id})[0]
    return {"text": row["training_text"], "summary": json.loads(row["classification"]).get("summary"),
            "note": json.loads(row["decision"]).get("note")}


def test_old_ticket_text_is_purged_and_corrections_are_kept(
        make_services: Callable[..., Services], claude: FakeClaude, zendesk_claude_api: responses.RequestsMock,
        clock: FakeClock) -> None:
    services = make_services(anthropic_api_key="sk-ant-test", deskroute_retention_days=30)
    claude.answer_next(**claude_answer("user_management", 0.95))
    route_new_ticket(services, zendesk_claude_api, 71, VAGUE_TICKET)
    services.store.corrections.add_history([{"platform": "zendesk", "ticket_id": "900", "text": "old solved ticket",
                                 "category": "billing", "group_id": "1", "solved_at": "2026-01-01",
                                 "imported_at": clock()}])
    services.store.corrections.add({"platform": "zendesk", "ticket_id": "71", "change_id": "c1", "seq": 1,
                                   "text": "Following up on what we discussed [NAME]", "status": "pending",
                                   "created_at": clock()})
    clock.advance(10 * DAY)
    route_later = 72
    claude.answer_next(**claude_answer("billing", 0.95))
    route_new_ticket(services, zendesk_claude_api, route_later, "Quick question about the thing from yesterday's call")
    before = ticket_row(services, "71")
    assert before["text"] and before["summary"] and "Summary:" in before["note"]

    assert purge_job(services) == {"tickets": 0, "history": 0, "unrouted": 0}  # nothing is 30 days old yet
    clock.advance(25 * DAY)  # ticket 71 and the history row are 35 days old, ticket 72 is 25
    assert purge_job(services) == {"tickets": 1, "history": 1, "unrouted": 0}
    assert ticket_row(services, "71") == {"text": None, "summary": None, "note": PURGED_NOTE}
    stored = services.store.db.execute("SELECT classification, decision FROM tickets WHERE ticket_id = '71'")[0]
    for free_text in ("Mentions a charge", "billing problem"):  # Claude's reason and summary, in every copy
        assert free_text not in stored["classification"] and free_text not in stored["decision"]
    assert json.loads(stored["classification"])["reason"] == PURGED_TEXT
    kept = ticket_row(services, str(route_later))
    assert kept["text"] and kept["summary"]
    assert services.store.db.execute("SELECT text FROM history")[0]["text"] is None
    assert services.store.db.execute("SELECT text FROM corrections")[0]["text"].startswith("Following")
    record = services.store.tickets.get("zendesk", "71")  # the decision itself is still readable
    assert record is not None and record.decision is not None and record.decision.category == "user_management"
    assert purge_job(services) == {"tickets": 0, "history": 0, "unrouted": 0}  # idempotent


def test_claudes_reason_goes_even_when_it_sent_the_ticket_to_triage(
        make_services: Callable[..., Services], claude: FakeClaude, zendesk_claude_api: responses.RequestsMock,
        clock: FakeClock) -> None:
    services = make_services(anthropic_api_key="sk-ant-test", deskroute_retention_days=30)
    claude.answer_next(**claude_answer("none", 0.9, reason="Customer Jo Bloggs asks about order 4471"))
    route_new_ticket(services, zendesk_claude_api, 73, VAGUE_TICKET)
    record = services.store.tickets.get("zendesk", "73")
    assert record is not None and record.decision is not None and record.decision.triage
    assert "Jo Bloggs" in record.decision.reason  # Claude's words, on the triage decision
    clock.advance(31 * DAY)
    purge_job(services)
    stored = services.store.db.execute("SELECT classification, decision FROM tickets WHERE ticket_id = '73'")[0]
    assert "Jo Bloggs" not in stored["classification"] and "Jo Bloggs" not in stored["decision"]


def test_the_scheduler_runs_the_purge_only_when_retention_is_set(make_services: Callable[..., Services]) -> None:
    assert "purge_text" in {job.id for job in init_scheduler(make_services()).get_jobs()}
    assert "purge_text" not in {job.id for job in init_scheduler(
        make_services(deskroute_retention_days=0)).get_jobs()}


def test_models_keep_no_word_from_a_single_ticket_and_old_versions_go(services: Services) -> None:
    from connector.classify.local import LocalModel
    from connector.datasets import Dataset
    from connector.feedback import MODELS_KEPT, save_model, train_active

    texts = [f"Please add {n} seats to our plan, the invoice can follow" for n in range(6)]
    private = "My password is Qzv8Hunter2Secret and my name is Bartholomew Ngozi, the invoice is wrong"
    texts += [private, private]  # one ticket twice: a correction, then again from a history import
    version = train_active(services.store, services.taxonomy, Dataset(texts, ["billing"] * len(texts)),
                           source="imported tickets")
    model = LocalModel.from_bytes(services.store.models.blob(version))
    words, chars = (set(v.vocabulary_) for v in model._vectorizers)
    assert "seats" in words and "invoice" in words  # in several tickets (and the admin's examples)
    for private in ("qzv8hunter2secret", "bartholomew", "ngozi"):
        assert private not in words
    assert not {"zv8hu", "2secr", "artho", "ngozi"} & chars  # nor pieces of them
    for _ in range(MODELS_KEPT + 2):
        save_model(services.store, model, source="tests", activate=False)
    versions = [m.version for m in services.store.models.all()]
    assert len(versions) == MODELS_KEPT + 1 and services.store.models.active_version() in versions  # + the active
