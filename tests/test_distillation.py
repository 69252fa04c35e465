"""Claude decisions through the whole pipeline: usage recorded, prompt version kept, and confident
decisions that nobody re-routed becoming training examples for the local model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import responses

from connector.feedback import feedback_dataset, train_active
from connector.models import TicketEvent
from connector.services import Services
from helpers import VAGUE_TICKET, FakeClock, claude_answer, drain, route_new_ticket
from platforms.fakes.claude import FakeClaude

TEXT = "Something about our account looks off, please call +44 20 7946 0958 or write to ana@shop.io"


@pytest.fixture
def services(make_services: Callable[..., Services], claude: FakeClaude) -> Services:
    return make_services(anthropic_api_key="sk-ant-test", deskroute_distill_after_hours=24)



def test_a_claude_decision_is_recorded_with_its_usage_and_prompt(services: Services, claude: FakeClaude,
                                                                 zendesk_claude_api: responses.RequestsMock) -> None:
    claude.answer_next(**claude_answer("user_management", 0.95, priority="low"))
    route_new_ticket(services, zendesk_claude_api, 41, TEXT)
    record = services.store.tickets.get("zendesk", "41")
    assert record is not None and record.state == "done" and record.classification is not None
    assert record.classification.tier == "llm" and record.decision is not None
    assert record.decision.category == "user_management" and record.decision.group_id == "360000000106"
    assert record.decision.priority == "low"  # Claude's reading, the mapping has none for this category
    assert "Summary: Customer reports a billing problem." in record.decision.note
    [usage] = services.store.stats.llm_usage()
    assert (usage.model, usage.outcome, usage.calls) == ("claude-haiku-4-5", "ok", 1)
    assert usage.input_tokens > 0 and usage.cost_usd > 0
    from connector import create_app

    metrics = create_app(services=services).test_client().get("/metrics").get_data(as_text=True)
    assert 'deskroute_llm_calls_total{model="claude-haiku-4-5",outcome="ok"} 1.0' in metrics
    assert 'deskroute_llm_cost_usd_total{model="claude-haiku-4-5"}' in metrics
    row = services.store.db.execute("SELECT prompt_version, training_text FROM tickets")[0]
    assert row["prompt_version"].startswith("p-")
    assert "ana@shop.io" not in row["training_text"] and "[EMAIL]" in row["training_text"]


def test_confident_unrerouted_claude_labels_become_training_examples(
        services: Services, claude: FakeClaude, zendesk_claude_api: responses.RequestsMock, clock: FakeClock) -> None:
    # Texts the local model can't place, so that Claude decides each one.
    claude.answer_next(**claude_answer("user_management", 0.95))   # confident; stays where we put it
    route_new_ticket(services, zendesk_claude_api, 51, VAGUE_TICKET)
    claude.answer_next(**claude_answer("user_management", 0.95))   # confident, but an agent moves it
    route_new_ticket(services, zendesk_claude_api, 52,
                     "Could you have a look at the matter my colleague raised with you yesterday")
    claude.answer_next(**claude_answer("billing", 0.8))            # decided, but not confident enough to learn from
    route_new_ticket(services, zendesk_claude_api, 53, "There is something odd on our account this month")
    services.queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.group_changed", ticket_id="52",
                                       dedup_key="moved-52", group_id="360000000103", actor_id="7"))
    drain(services)
    assert len(claude.messages()) == 3

    settings = services.settings
    assert feedback_dataset(services.store, services.taxonomy, settings, now=clock()).labels.count(
        "user_management") == len(services.taxonomy.categories["user_management"].examples)  # too recent
    clock.advance(25 * 3600)
    dataset = feedback_dataset(services.store, services.taxonomy, settings, now=clock())
    distilled = dataset.texts[len(services.taxonomy.examples()[0]):]
    assert distilled == ["Question\n" + VAGUE_TICKET]
    version = train_active(services.store, services.taxonomy, source="feedback", base=dataset)
    [model] = [m for m in services.store.models.all() if m.version == version]
    assert model.n_examples == len(dataset)


def test_distillation_can_be_turned_off(make_services: Callable[..., Services], claude: FakeClaude,
                                        zendesk_claude_api: responses.RequestsMock) -> None:
    services = make_services(anthropic_api_key="sk-ant-test", deskroute_distill=False)
    claude.answer_next(**claude_answer("user_management", 0.99))
    route_new_ticket(services, zendesk_claude_api, 61, TEXT)
    row: Any = services.store.db.execute("SELECT training_text FROM tickets")[0]
    assert row["training_text"] is None
