"""A taxonomy edit gets a new model in the background: the workers keep routing meanwhile, one process
trains for the whole install, and a training that failed is taken up again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from connector.config import CategoryEdit, RouteEdit, save_category
from connector.feedback import fits_taxonomy
from connector.model_keeper import TRAIN_LOCK, Lease
from connector.services import MODEL_CHECK_SECONDS, Services
from helpdesks import Env
from helpers import FakeClock, drain

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
    first, second = make_services(), make_services()  # two processes, one database
    spawned = [keep_with(s) for s in (first, second)]
    versions = len(first.store.models.all())
    add_gift_cards(first)
    for services in (first, second):
        services.reload_config(force=True)
    assert first.model_keeper.check(first.taxonomy)  # it holds the install's training lease...
    assert not second.model_keeper.check(second.taxonomy) and not spawned[1].targets  # ...so this one waits
    spawned[0].run()
    assert len(first.store.models.all()) == versions + 1 and fits_taxonomy(labels(second), second.taxonomy)
    assert not second.model_keeper.check(second.taxonomy)  # it fits now: nothing more to train


def test_a_model_for_categories_edited_while_it_trained_is_kept_inactive(services: Services) -> None:
    spawned = keep_with(services)
    before = services.store.models.active_version()
    add_gift_cards(services)
    services.reload_config(force=True)
    assert services.model_keeper.check(services.taxonomy)
    gift_cards_only = services.taxonomy
    add_gift_cards(services, name="loyalty_points", description="Loyalty points and rewards")  # meanwhile
    services.reload_config(force=True)
    spawned.run()
    assert services.store.models.active_version() == before  # not the one for a taxonomy that is gone
    assert "not activated" in services.store.models.all()[0].source
    assert not fits_taxonomy(labels(services), gift_cards_only)
    assert services.model_keeper.check(services.taxonomy)  # the next look trains for the live categories
    spawned.run()
    assert fits_taxonomy(labels(services), services.taxonomy)


def test_a_lease_another_process_took_over_is_noticed(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("connector.model_keeper.LEASE_SECONDS", 0.3)
    lease = Lease.take(services.store, "slow-trainer")
    assert lease is not None
    time.sleep(0.35)  # a renewal that didn't come in time (the database was away, say)...
    assert services.store.auth.try_lock(TRAIN_LOCK, "other", until=time.time() + 60, now=time.time())
    with lease:  # ...is refused at the next try, and what this process trained isn't activated
        assert lease.lost.wait(2.0)


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


def test_the_scheduled_retrain_leaves_the_cores_to_a_training_in_progress(services: Services,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from connector.scheduler import retrain_job

    caplog.set_level(logging.INFO)
    versions = len(services.store.models.all())
    assert services.store.auth.try_lock(TRAIN_LOCK, "keeper-elsewhere", until=time.time() + 60, now=time.time())
    retrain_job(services)
    assert "scheduled retrain skipped" in caplog.text and len(services.store.models.all()) == versions
    [skipped] = services.store.retrains.recent()  # the Model page says why no model came of it
    assert (skipped.trigger, skipped.outcome) == ("schedule", "skipped") and "another training" in skipped.reason


def test_a_retrain_for_categories_edited_while_it_trained_is_not_promoted(services: Services,
                                                                          clock: FakeClock) -> None:
    from connector.scheduler import retrain_job

    clock.advance(3600)  # feedback the current model hasn't seen, enough for the gate to judge on
    for n, text in enumerate(GIFT_CARDS.examples * 3):
        services.store.corrections.add({
            "platform": "zendesk", "ticket_id": str(900 + n), "change_id": f"c{n}", "seq": 1, "text": f"{text} {n}",
            "predicted_category": "billing", "predicted_group_id": "360000000101", "predicted_tier": "local",
            "predicted_confidence": 0.9, "previous_group_id": "360000000101", "corrected_group_id": "360000000106",
            "corrected_category": "how_to", "agent_id": "5", "via": "web", "routed_at": clock() - 600,
            "rerouted_at": clock(), "status": "accepted", "reviewed_at": clock(), "created_at": clock()})
    before = services.store.models.active_version()

    def leading_while_an_admin_adds_a_category() -> bool:
        keep_with(services)
        add_gift_cards(services)
        services.reload_config(force=True)
        return True

    retrain_job(services, still_leading=leading_while_an_admin_adds_a_category)
    assert services.store.models.active_version() == before
    newest = services.store.models.all()[0]
    assert not newest.active and "categories edited" in newest.source
    [kept] = services.store.retrains.recent()
    assert (kept.outcome, kept.version) == ("kept inactive", newest.version)


def test_admins_clicking_retrain_at_once_ask_for_one(make_services: Callable[..., Services]) -> None:
    """Two web processes, four clicks each at the same moment: one request, so one retrain."""
    from concurrent.futures import ThreadPoolExecutor

    from connector.model_keeper import request_retrain

    webs = [make_services(), make_services()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        asked = list(pool.map(lambda n: request_retrain(webs[n % 2].store, by="admin"), range(8)))
    assert asked.count(True) == 1


# --- the first model, on a fresh install ------------------------------------------------------------

@pytest.mark.parametrize("training_fails", [False, True])
def test_serve_answers_while_the_first_model_trains_and_workers_start_after(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, taxonomy_model: Any, training_fails: bool) -> None:
    """A fresh install's first model takes seconds to train: serve's web app must answer meanwhile (a webhook
    then waits in the queue, not at a closed port), and the workers start once it is done, or failed."""
    import threading

    from connector import create_app
    from connector.feedback import save_model
    from helpers import make_settings, wait_for

    services = Services(make_settings(tmp_path))
    assert services.store.models.active_version() is None
    started, release = threading.Event(), threading.Event()

    def slow_first_model(store: Any, *args: Any, **kwargs: Any) -> int:
        started.set()
        assert release.wait(30)
        if training_fails:
            raise MemoryError("killed")
        return save_model(store, taxonomy_model, source="tests", activate=True)

    monkeypatch.setattr("connector.feedback.ensure_model", slow_first_model)
    pool = services.start_workers(first_model_in_background=True)
    try:
        assert started.wait(10)
        assert create_app(services=services).test_client().get("/health").status_code == 200
        assert not pool._threads  # no worker claims an event before there is a model to route it with
        release.set()
        wait_for(lambda: len(pool._threads) == services.settings.deskroute_worker_threads, what="workers started")
        assert (services.store.models.active_version() is None) == training_fails
    finally:
        release.set()
        pool.stop()


def test_two_processes_starting_together_train_the_first_model_once(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, taxonomy_model: Any) -> None:
    """The first model trains under the install's training lease: a process that finds another training it
    waits for that model instead of training a second one on the same cores."""
    from connector.feedback import save_model
    from helpers import make_settings, wait_for

    services = Services(make_settings(tmp_path))
    other = Lease.take(services.store, "another process")
    assert other is not None
    tries: list[str] = []
    take = Lease.take.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Lease, "take", classmethod(lambda cls, store, owner: tries.append(owner) or take(cls, store,
                                                                                                         owner)))
    trained: list[bool] = []
    monkeypatch.setattr("connector.feedback.ensure_model", lambda *args, **kwargs: trained.append(True))
    pool = services.start_workers(first_model_in_background=True)
    try:
        wait_for(lambda: len(tries) >= 2, what="the lease tried twice")  # and found taken
        assert not pool._threads and not trained
        save_model(services.store, taxonomy_model, source="the other process", activate=True)
        other.__exit__(None, None, None)
        wait_for(lambda: pool._threads, what="workers started")
        assert not trained
    finally:
        pool.stop()
