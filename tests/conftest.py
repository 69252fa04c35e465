"""Shared fixtures: settings that never read the developer's environment, a controllable clock,
and services wired to a real ZendeskPlatform whose outbound HTTP is faked with `responses`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

import databases
from connector import create_app
from connector.classify.local import LocalModel
from connector.feedback import save_model, taxonomy_dataset
from connector.mappings import load_taxonomy
from connector.services import Services
from connector.store.db import Database
from helpdesks import HELPDESKS, Env, Helpdesk
from helpers import PROJECT, ZENDESK_HOST, FakeClock, make_settings, token_answer
from platforms.fakes.claude import FakeClaude
from platforms.zendesk import ZendeskPlatform


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--database", choices=["sqlite", "postgresql"], default="sqlite",
                     help="run the suite on this database (postgresql: DESKROUTE_TEST_POSTGRES's server)")


def pytest_configure(config: pytest.Config) -> None:
    databases.set_dialect(config.getoption("--database"))
    if databases.dialect() == "postgresql" and (problem := databases.server_problem()):
        raise pytest.UsageError(problem)


# Modules the PostgreSQL pass leaves to the SQLite one, which runs them already: those that never open a
# database, and the browser tests (CI runs both passes, and their sum has to fit its time budget).
NO_DATABASE = {"test_classify.py", "test_docs.py", "test_evaluation.py", "test_language.py", "test_mappings.py",
               "test_redact.py", "test_soak.py", "test_zendesk_parse.py", "test_zendesk_signature.py",
               "test_local_model.py", "test_llm.py", "test_app_packages.py",
               "test_demo.py",  # the demo keeps a SQLite file of its own, whatever the pass
               # Pages in a real browser: what they check is the page; the store calls behind them run on
               # PostgreSQL in test_admin*.py and test_sidebar_api.py (CI's time is better spent there).
               "test_browser.py", "test_sidebar_browser.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if databases.dialect() != "postgresql":
        return
    kept = [item for item in items if item.path.name not in NO_DATABASE]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.path.name in NO_DATABASE])
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {databases.dialect()}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if databases._state["template"] or databases._state["created"]:
        databases.drop_created(keep_template=False)


@pytest.fixture(autouse=True)
def _drop_test_databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every engine a test opened (pooled connections left to the garbage collector warn), then drop
    the test's PostgreSQL databases."""
    opened: list[Database] = []
    init = Database.__init__

    def tracked(self: Database, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(Database, "__init__", tracked)
    yield
    for db in opened:
        db.dispose()
    if databases._state["created"] or databases._state["used"]:
        databases.drop_created()


@pytest.fixture(autouse=True)
def _trainings_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model keeper's training runs in the thread that asks for it, not in one that would outlive the test
    (and its database); tests/test_model_keeper.py controls when its trainings run."""
    monkeypatch.setattr("connector.model_keeper.start_thread", lambda target: target())


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's helpdesk credentials or Deskroute settings."""
    for key in list(os.environ):
        if key.startswith(("ZENDESK_", "FRESHDESK_", "ANTHROPIC_", "DESKROUTE_", "ZENPY_")) or key == "DATABASE_URL":
            monkeypatch.delenv(key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def taxonomy_model() -> LocalModel:
    """The model trained on mappings/taxonomy.yaml, trained once per session."""
    data = taxonomy_dataset(load_taxonomy(PROJECT / "mappings"))
    return LocalModel.train(data.texts, data.labels)


@pytest.fixture
def make_services(tmp_path: Path, clock: FakeClock, taxonomy_model: LocalModel) -> Callable[..., Services]:
    """Build Services with a real ZendeskPlatform whose clock and sleeps the test controls."""

    def make(**overrides: Any) -> Services:
        settings = make_settings(tmp_path, **overrides)
        sleeps: list[float] = []
        platforms = {"zendesk": ZendeskPlatform.from_settings(settings, now=clock.datetime, sleep=sleeps.append)}
        services = Services(settings, platforms=platforms, clock=clock)
        save_model(services.store, taxonomy_model, source="tests", activate=True)
        services.sleeps = sleeps  # type: ignore[attr-defined]
        return services

    return make


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()


@pytest.fixture
def client(services: Services) -> Any:
    return create_app(services=services).test_client()


@pytest.fixture
def zendesk_api() -> Iterator[responses.RequestsMock]:
    """Outbound HTTP to Zendesk, faked; any call not registered fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(f"{ZENDESK_HOST}/oauth/tokens", json=token_answer(), status=201)
        yield mock


@pytest.fixture
def zendesk_claude_api() -> Iterator[responses.RequestsMock]:
    """Outbound HTTP to Zendesk, faked, with calls to the loopback Claude let through."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(f"{ZENDESK_HOST}/oauth/tokens", json=token_answer(), status=201)
        mock.add_passthru("http://127.0.0.1")
        yield mock


@pytest.fixture
def claude(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClaude]:
    """A loopback Claude; the anthropic SDK finds it through ANTHROPIC_BASE_URL."""
    fake = FakeClaude()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://{fake.start()}")
    yield fake
    fake.stop()


@pytest.fixture(params=sorted(HELPDESKS))
def helpdesk(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Helpdesk]:
    harness = HELPDESKS[request.param](clock)
    yield harness
    harness.stop()


@pytest.fixture
def make_env(helpdesk: Helpdesk, tmp_path: Path, clock: FakeClock, taxonomy_model: LocalModel,
             monkeypatch: pytest.MonkeyPatch) -> Callable[..., Env]:
    def make(platform_class: type | None = None, **overrides: Any) -> Env:
        for key, value in helpdesk.env().items():
            monkeypatch.setenv(key, value)
        settings = make_settings(tmp_path, **{"deskroute_http_timeout": 0.5, **helpdesk.settings(), **overrides})
        cls = platform_class or helpdesk.platform_class
        platform = cls.from_settings(settings, now=clock.datetime, sleep=lambda seconds: None)
        services = Services(settings, platforms={helpdesk.name: platform}, clock=clock)
        save_model(services.store, taxonomy_model, source="tests", activate=True)
        classified: list[str] = []
        original = services.router.classify
        monkeypatch.setattr(services.router, "classify",
                            lambda text, *more: classified.append(text) or original(text, *more))
        return Env(helpdesk, services, create_app(services=services).test_client(), clock, classified)

    return make


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()
