"""A taxonomy edit gets a new model in the background: the workers keep routing meanwhile, one process
trains for the whole install, and a training that failed is taken up again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connector.config import CategoryEdit, RouteEdit, save_category
from connector.feedback import fits_taxonomy
from connector.model_keeper import TRAIN_LOCK
from connector.services import MODEL_CHECK_SECONDS, Services
from helpdesks import Env
from helpers import drain

GIFT_CARDS = CategoryEdit(
    name="gift_cards", description="Gift cards: redeeming, balances, cards refused", keywords=[],
    examples=["my gift card is not accepted at checkout", "how do I check the balance of a gift card",
              "the gift card code says it was already redeemed", "can I use two gift cards on one order"],
    priority="normal", mode="live", routes={})


class Spawned:
    """Stands in for the trainer's thread: keeps what it was asked to run, to run it when the test says."""

    def __init__(self) -> None:
        self.targets: list[Callable[[], None]] = []

    def __call__(self, target: Callable[[], None]) -> None:
        self.targets.append(target)

    def run(self) -> None:
        while self.targets:
            self.targets.pop(0)()


def keep_with(services: Services) -> Spawned:
    spawned = Spawned()
    services.model_keeper._spawn = spawned
    return spawned


def labels(services: Services) -> list[str]:
    version = services.store.models.active_version()
    assert version is not None
    return services.store.models.info(version).labels


def add_gift_cards(services: Services, **changes: Any) -> None:
    """Gift cards, sent where how_to questions go in each helpdesk."""
    routes = {name: RouteEdit(group_id=m.categories["how_to"].group_id) for name, m in services.mappings.items()}
    edit = CategoryEdit(**{**GIFT_CARDS.__dict__, "routes": routes, **changes})
    save_category(services.mappings_dir, services.store, edit, author="admin", now=services.clock())


def new_ticket(env: Env, ticket_id: int, subject: str, description: str) -> None:
    env.helpdesk.add_ticket(ticket_id, subject=subject, description=description, tags=[])
    assert env.post(*env.helpdesk.created_webhook(ticket_id, env.clock)).status_code in (200, 202)


def test_a_new_category_is_trained_for_while_the_worker_keeps_routing(env: Env) -> None:
    services = env.services
    spawned = keep_with(services)
    before = services.store.models.active_version()
    drain(services)  # the first job's look: the model fits, nothing to train
    assert spawned.targets == []
    add_gift_cards(services)
    new_ticket(env, 71, "Invoice", "Please send me a copy of my invoice for October")
    drain(services)  # sees the edit: the training is started, not waited for
    assert len(spawned.targets) == 1
    record = services.store.tickets.get(env.name, "71")
    assert record is not None and record.decision is not None and record.decision.category == "billing"
    assert services.store.models.active_version() == before and "gift_cards" not in labels(services)

    spawned.run()
    assert fits_taxonomy(labels(services), services.taxonomy)
    assert services.router.cascade().local.predict("my gift card was refused").top_label == "gift_cards"


def test_one_process_trains_for_the_install(make_services: Callable[..., Services]) -> None:
    web_and_worker = [make_services(), make_services()]  # two processes, one database
    spawned = [keep_with(s) for s in web_and_worker]
    versions = len(web_and_worker[0].store.models.all())
    add_gift_cards(web_and_worker[0])
    for services in web_and_worker:
        services.reload_config(force=True)
        assert services.model_keeper.check(services.taxonomy)
    first, second = web_and_worker
    assert first.store.auth.try_lock(TRAIN_LOCK, first.model_keeper.owner, until=first.clock() + 60,
                                     now=first.clock())  # the first is training...
    spawned[1].run()  # ...so the second leaves it to the first
    assert len(first.store.models.all()) == versions
    first.store.auth.unlock(TRAIN_LOCK, first.model_keeper.owner)
    spawned[0].run()
    assert len(first.store.models.all()) == versions + 1
    assert not second.model_keeper.check(second.taxonomy)  # it fits now: nothing more to train


def test_a_failed_training_is_taken_up_again_a_minute_later(services: Services, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    spawned = keep_with(services)
    now = [0.0]
    services._monotonic = lambda: now[0]
    add_gift_cards(services)
    services.reload_config(force=True)

    def broken(*args: Any, **kwargs: Any) -> int:
        raise MemoryError("the host ran out of memory")

    monkeypatch.setattr("connector.feedback.ensure_model", broken)
    services._before_job()
    spawned.run()
    assert "training a model for the edited taxonomy failed" in caplog.text
    assert not fits_taxonomy(labels(services), services.taxonomy)
    assert services.store.auth.try_lock(TRAIN_LOCK, "someone-else", until=1e12, now=services.clock())  # lease freed
    services.store.auth.unlock(TRAIN_LOCK, "someone-else")
    monkeypatch.undo()

    now[0] += 10
    services._before_job()
    assert spawned.targets == []  # not every job: once a minute
    now[0] += MODEL_CHECK_SECONDS
    services._before_job()
    spawned.run()
    assert fits_taxonomy(labels(services), services.taxonomy)


def test_a_ticket_for_a_category_the_model_does_not_know_yet_is_routed_by_its_keywords(env: Env) -> None:
    """Until the new model is active, the rules tier (the category's keywords) and Claude route such tickets."""
    spawned = keep_with(env.services)
    add_gift_cards(env.services, keywords=["gift card"])
    new_ticket(env, 72, "Gift card", "My gift card is refused at checkout")
    drain(env.services)
    assert spawned.targets  # the new model isn't there yet
    record = env.services.store.tickets.get(env.name, "72")
    assert record is not None and record.decision is not None and record.decision.category == "gift_cards"
