"""Zendesk over OAuth against the loopback Zendesk (its OAuth server is platforms/fakes/oauth.py):
one shared token, renewal before expiry and on 401, refresh-token rotation across processes, every
error the token endpoint gives, and what /health, doctor and the queue make of them."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector import create_app
from connector.cli import main
from connector.services import Services
from connector.store import Store
from connector.tokens import DbVault
from databases import database_url
from helpdesks import Env
from helpers import PROJECT, SECRET, cli_environment, drain, make_settings
from platforms.base import AuthFailed
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, FakeZendesk
from platforms.zendesk import ZendeskPlatform
from platforms.zendesk_oauth import (
    AUTHORIZATION_CODE,
    MemoryVault,
    OAuthError,
    StoredToken,
    TokenProvider,
    ZendeskOAuth,
    pkce_pair,
)

SECRET_KEY = "k" * 40  # DESKROUTE_SECRET_KEY in these tests


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeZendesk]:
    fake = FakeZendesk(groups={360000000100: "Triage", 360000000101: "Billing"}, refuse_basic=True)
    netloc = fake.start()
    monkeypatch.setenv("ZENPY_FORCE_NETLOC", netloc)
    monkeypatch.setenv("ZENPY_FORCE_SCHEME", "http")
    yield fake
    fake.stop()


def oauth(secret: str = OAUTH_CLIENT_SECRET, client_id: str = OAUTH_CLIENT_ID, **options: Any) -> ZendeskOAuth:
    return ZendeskOAuth(subdomain="acme", client_id=client_id, client_secret=secret, timeout=2.0, **options)


def platform(provider: TokenProvider) -> ZendeskPlatform:
    return ZendeskPlatform(subdomain="acme", webhook_secret=SECRET, tokens=provider, sleep=lambda s: None)


def connected(fake: FakeZendesk, vault: Any, client: ZendeskOAuth | None = None) -> StoredToken:
    """Run the authorization-code flow against the fake (as the admin UI does) and store the tokens."""
    client = client or oauth()
    verifier, challenge = pkce_pair()
    redirect_uri = "http://127.0.0.1:1/admin/zendesk/callback"
    with fake.lock:
        response = fake.oauth._decide({"decision": "allow", "client_id": client.client_id, "redirect_uri": redirect_uri,
                                       "state": "s", "code_challenge": challenge})
    code = response.headers["Location"].split("code=")[1].split("&")[0]
    token = replace(client.exchange_code(code=code, redirect_uri=redirect_uri, code_verifier=verifier),
                    grant=AUTHORIZATION_CODE, connected_as="Ada Admin <ada@example.com>")
    vault.connect(token)
    return vault.load()


# --- the token itself -----------------------------------------------------------------------------


def test_one_token_serves_every_call_until_it_nears_expiry(fake: FakeZendesk) -> None:
    now = [1000.0]
    provider = TokenProvider(oauth(clock=lambda: now[0]), MemoryVault(), clock=lambda: now[0])
    zendesk = platform(provider)
    fake.add_ticket(1, subject="s", description="d")
    for _ in range(5):
        zendesk.fetch_ticket("1")
    assert fake.oauth.grants_issued == ["client_credentials"]
    assert fake.basic_calls == 0
    now[0] += 1800 - 59  # a minute before the 30-minute token expires, it is renewed
    zendesk.fetch_ticket("1")
    assert fake.oauth.grants_issued == ["client_credentials"] * 2


ZENDESK_HARNESS = pytest.mark.parametrize("helpdesk", ["zendesk"], indirect=True)


@ZENDESK_HARNESS
def test_a_token_refused_mid_job_is_renewed_and_the_write_sent_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = env.helpdesk.fake
    zendesk = env.services.platforms["zendesk"]
    fetch = zendesk.fetch_ticket

    def fetch_then_expire(ticket_id: str) -> Any:
        ticket = fetch(ticket_id)
        fake.oauth.expire_access_tokens()  # the token dies between the read and the write
        return ticket

    monkeypatch.setattr(zendesk, "fetch_ticket", fetch_then_expire)
    env.create(7)
    drain(env.services)
    puts = [r for r in fake.requests if r[0] == "PUT"]
    assert len(puts) == 2  # refused once (401), repeated once with the new token
    assert len(env.helpdesk.writes(7)) == 1 and len(env.helpdesk.notes(7)) == 1
    assert env.events()[0]["state"] == "done"
    assert fake.oauth.grants_issued == ["client_credentials"] * 2


def test_threads_and_providers_on_one_vault_mint_one_token(fake: FakeZendesk, tmp_path: Path) -> None:
    import threading

    store = Store(tmp_path / "d.db")
    store.migrate()
    providers = [TokenProvider(oauth(), DbVault(store, "zendesk", client_secret=OAUTH_CLIENT_SECRET))
                 for _ in range(4)]
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda p=p: tokens.append(p.token())) for p in providers for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1 and fake.oauth.grants_issued == ["client_credentials"]


def test_tokens_are_encrypted_at_rest_with_a_key_not_in_the_database(fake: FakeZendesk, tmp_path: Path) -> None:
    store = Store(tmp_path / "d.db")
    store.migrate()
    vault = DbVault(store, "zendesk", secret_key=SECRET_KEY, client_secret=OAUTH_CLIENT_SECRET)
    token = connected(fake, vault)
    raw = (tmp_path / "d.db").read_bytes() + (tmp_path / "d.db-wal").read_bytes()
    assert token.access_token.encode() not in raw and token.refresh_token.encode() not in raw  # type: ignore[union-attr]
    row = sqlite3.connect(tmp_path / "d.db").execute("SELECT access_token, key_id FROM oauth_tokens").fetchone()
    assert row[0].startswith("gAAAAA") and row[1] == "secret_key"  # a Fernet token
    # A process with another key (a typo, a shell without the setting) can't open it, says so, and
    # leaves it alone: the rightly configured processes keep their connection.
    stray = DbVault(store, "zendesk", secret_key="x" * 40)
    assert stray.load() is None and "DESKROUTE_SECRET_KEY" in (stray.unreadable or "")
    stray_provider = TokenProvider(oauth(), stray)
    assert stray_provider.status()["status"] == "auth_failing"
    stray_provider.token()  # client credentials of its own, in memory...
    assert vault.load() == token  # ...while the stored connection is untouched


def test_client_credentials_tokens_use_a_key_derived_from_the_client_secret(fake: FakeZendesk,
                                                                            tmp_path: Path) -> None:
    store = Store(tmp_path / "d.db")
    store.migrate()
    provider = TokenProvider(oauth(), DbVault(store, "zendesk", client_secret=OAUTH_CLIENT_SECRET))
    token = provider.token()
    row = store.auth.token("zendesk")
    assert row is not None and row["key_id"] == "client_secret" and token not in row["access_token"]
    # Without DESKROUTE_SECRET_KEY a Connect-flow token has nowhere safe to go.
    assert not DbVault(store, "zendesk", client_secret=OAUTH_CLIENT_SECRET).can_store_connections


# --- refresh tokens rotate: one process refreshes, none is locked out -------------------------------


def test_a_refresh_rotates_the_refresh_token_and_keeps_who_connected(fake: FakeZendesk) -> None:
    vault = MemoryVault()
    first = connected(fake, vault)
    provider = TokenProvider(oauth(), vault)
    renewed = provider.renew_after_401(first.access_token)
    stored = vault.load()
    assert stored is not None and stored.access_token == renewed != first.access_token
    assert stored.refresh_token != first.refresh_token and first.refresh_token not in fake.oauth.refresh_tokens
    assert stored.connected_as == "Ada Admin <ada@example.com>" and stored.grant == AUTHORIZATION_CODE
    assert platform(provider).whoami()["name"] == "Ada Admin"  # the consenting admin, not the client's creator


def _refresh_in_process(database: str, netloc: str, rejected: str, start_at: float, out: Any) -> None:
    import os

    os.environ.update(ZENPY_FORCE_NETLOC=netloc, ZENPY_FORCE_SCHEME="http")
    store = Store(database)
    provider = TokenProvider(oauth(), DbVault(store, "zendesk", secret_key=SECRET_KEY,
                                              client_secret=OAUTH_CLIENT_SECRET))
    time.sleep(max(0.0, start_at - time.time()))
    try:
        out.put(("ok", provider.renew_after_401(rejected)))
    except OAuthError as exc:
        out.put(("error", exc.code))


def test_processes_refreshing_at_once_spend_the_refresh_token_once(fake: FakeZendesk, tmp_path: Path) -> None:
    database = str(tmp_path / "d.db")
    store = Store(database)
    store.migrate()
    vault = DbVault(store, "zendesk", secret_key=SECRET_KEY, client_secret=OAUTH_CLIENT_SECRET)
    first = connected(fake, vault)
    fake.oauth.expire_access_tokens()
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start_at = time.time() + 3.0  # after every process has imported and opened the database
    processes = [context.Process(target=_refresh_in_process, args=(database, fake.address, first.access_token,
                                                                   start_at, out)) for _ in range(3)]
    for process in processes:
        process.start()
    results = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(10)
    assert [r[0] for r in results] == ["ok"] * 3
    assert len({r[1] for r in results}) == 1  # everyone uses the winner's token
    assert fake.oauth.grants_issued.count("refresh_token") == 1
    stored = vault.load()
    assert stored is not None and stored.refresh_token in fake.oauth.refresh_tokens  # the live one is kept
    assert TokenProvider(oauth(), vault).renew_after_401(stored.access_token)  # and it still works: no lock-out


def test_a_renewal_overtaken_by_another_process_does_not_lock_the_install_out(fake: FakeZendesk,
                                                                              tmp_path: Path) -> None:
    """A's lock expires while its refresh is in flight; B refreshes with the same (now deleted) token and
    is refused; A's answer arrives and is stored. The install keeps a working refresh token."""
    import threading

    store = Store(tmp_path / "d.db")
    store.migrate()
    vault = DbVault(store, "zendesk", secret_key=SECRET_KEY, client_secret=OAUTH_CLIENT_SECRET)
    first = connected(fake, vault)
    slow, quick = TokenProvider(oauth(), vault), TokenProvider(oauth(), vault)
    slow.lock_seconds = 0.2  # so that its lease runs out while Zendesk takes 1 s to answer it
    fake.slow_next(1.0, method="POST", path="/oauth/tokens")
    results: dict[str, Any] = {}
    a = threading.Thread(target=lambda: results.update(a=slow.renew_after_401(first.access_token)))
    a.start()
    time.sleep(0.5)
    try:
        results["b"] = quick.renew_after_401(first.access_token)
    except OAuthError as exc:
        results["b"] = exc.code
    a.join()
    assert results["b"] in ("invalid_grant", results["a"])
    stored = vault.load()
    assert stored is not None and stored.access_token == results["a"]
    assert stored.refresh_token in fake.oauth.refresh_tokens
    assert vault.error() is None  # A's save cleared B's failure
    assert TokenProvider(oauth(), vault).renew_after_401(stored.access_token) != stored.access_token


# --- errors: each has a clear message, a retried job and auth_failing in /health ---------------------


@pytest.mark.parametrize(("breakage", "expected"), [
    ("wrong_secret", "invalid_client"),
    ("revoked_client", "invalid_client"),
    ("scope", "invalid_scope"),
    ("down", "answered 503"),
])
def test_token_endpoint_failures_retry_the_job_and_show_auth_failing(
        fake: FakeZendesk, tmp_path: Path, clock: Any, taxonomy_model: Any, breakage: str, expected: str,
        caplog: pytest.LogCaptureFixture) -> None:
    from connector.feedback import save_model
    from connector.models import TicketEvent

    secret = "not-the-secret" if breakage == "wrong_secret" else OAUTH_CLIENT_SECRET
    if breakage == "revoked_client":
        fake.oauth.revoke_client(OAUTH_CLIENT_ID)
    if breakage == "scope":
        fake.oauth.clients[OAUTH_CLIENT_ID].scopes = frozenset({"read"})
    if breakage == "down":
        fake.fail_next(503, times=20, path="/oauth/tokens")
    settings = make_settings(tmp_path, zendesk_oauth_client_secret=secret)
    services = Services(settings, clock=clock)
    save_model(services.store, taxonomy_model, source="tests", activate=True)
    fake.add_ticket(5, subject="Invoice", description="Please resend the invoice")
    event_id, _ = services.queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id="5",
                                                     dedup_key="ticket.created:5"))
    drain(services)
    event = services.store.events.get(event_id)
    assert event["state"] == "pending" and event["attempts"] == 1  # retried later, with backoff
    assert expected in event["last_error"] and secret not in event["last_error"]
    assert not fake.applied  # nothing written without a token
    health = create_app(services=services).test_client().get("/health").json["platforms"]["zendesk"]
    assert health == {"configured": True, "auth": "oauth_client_credentials", "status": "auth_failing"}
    assert all(secret not in r.getMessage() and secret not in str(r.__dict__) for r in caplog.records)
    assert fake.oauth.grants_issued == [] and len(fake.calls("POST", "/oauth/tokens")) == 1  # no quick retries
    if breakage == "down":  # once Zendesk is back, the next attempt works and the status clears
        fake.faults.clear()
        clock.advance(3600)
        zendesk = services.platforms["zendesk"]
        zendesk.tokens.clock = lambda: time.time() + 3600  # past the sign-in cool-down too
        drain(services)
        assert services.store.events.get(event_id)["state"] == "done"
        health = create_app(services=services).test_client().get("/health").json["platforms"]["zendesk"]
        assert health["status"] == "ok"


def test_an_expired_refresh_token_asks_the_admin_to_reconnect(fake: FakeZendesk) -> None:
    vault = MemoryVault()
    first = connected(fake, vault)
    fake.oauth.refresh_tokens.clear()  # expired or revoked in Zendesk
    fake.oauth.expire_access_tokens()
    provider = TokenProvider(oauth(), vault)
    with pytest.raises(AuthFailed, match="connect Zendesk again in the admin UI"):
        platform(provider).fetch_ticket("1")
    assert provider.status()["status"] == "auth_failing"
    assert vault.load() == first  # kept: nothing is deleted on a failure


def test_base_url_serves_token_and_api_calls_without_zenpy_overrides(fake: FakeZendesk,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZENPY_FORCE_NETLOC")
    monkeypatch.delenv("ZENPY_FORCE_SCHEME")
    client = ZendeskOAuth(subdomain="acme", client_id=OAUTH_CLIENT_ID, client_secret=OAUTH_CLIENT_SECRET,
                          base_url=f"http://{fake.address}")
    zendesk = ZendeskPlatform(subdomain="acme", webhook_secret=SECRET, base_url=f"http://{fake.address}",
                              tokens=TokenProvider(client, MemoryVault()))
    fake.add_ticket(3, subject="s", description="d")
    assert zendesk.fetch_ticket("3").id == "3"
    assert [path for _, path, _ in fake.requests] == ["/oauth/tokens", "/api/v2/tickets/3.json"]


# --- settings: OAuth wins; API tokens keep working until 30 April 2027, loudly ----------------------


def test_client_id_and_secret_alone_configure_zendesk(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert not settings.zendesk_email and not settings.zendesk_api_token.get_secret_value()
    assert "zendesk" in Services(settings).platforms


def test_oauth_wins_over_an_api_token_when_both_are_set(fake: FakeZendesk, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, zendesk_email="bot@example.com", zendesk_api_token="tok")
    zendesk = Services(settings).platforms["zendesk"]
    fake.add_ticket(2, subject="s", description="d")
    zendesk.fetch_ticket("2")
    assert zendesk.auth_status()["auth"] == "oauth_client_credentials" and fake.basic_calls == 0


def test_the_shared_tokens_lifetime_is_on_the_vaults_clock(fake: FakeZendesk, tmp_path: Path) -> None:
    """The token is shared by every process of the install, on any machine: its lifetime is reckoned on the
    vault's clock (the database server's, on PostgreSQL), not on the clock of the host that minted it, or a
    token minted on a slow host would look expired to the others, and be minted again, all day."""
    server = [1_000_000.0]

    class ServerClockVault(MemoryVault):
        def now(self) -> float:
            return server[0]

    vault = ServerClockVault()
    zendesk = ZendeskPlatform.from_settings(make_settings(tmp_path), vault=vault)
    zendesk.tokens.token()  # type: ignore[union-attr]
    token = vault.load()
    assert token is not None and (token.issued_at, token.expires_at) == (server[0], server[0] + 1800)
    server[0] += 1800 - 59  # renewed a minute early, by the vault's clock
    zendesk.tokens.token()  # type: ignore[union-attr]
    assert fake.oauth.grants_issued == ["client_credentials"] * 2


def api_token_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_environment(monkeypatch, tmp_path, database_url(tmp_path, "d.db"), ZENDESK_SUBDOMAIN="acme",
                    ZENDESK_EMAIL="bot@example.com", ZENDESK_API_TOKEN="legacy-token", ZENDESK_WEBHOOK_SECRET="s")


def test_doctor_with_an_api_token_fails_and_names_oauth_and_the_date(
        fake: FakeZendesk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    fake.refuse_basic = False  # until 30 April 2027 the token still works...
    api_token_env(monkeypatch, tmp_path)
    result = CliRunner().invoke(main, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if "API token" in line]
    assert line.startswith("FIX  zendesk: uses an API token") and "30 April 2027" in line
    assert "ZENDESK_OAUTH_CLIENT_ID" in line and "ZENDESK_OAUTH_CLIENT_SECRET" in line
    assert "ok   zendesk: API reachable" in result.output  # ...and doctor says so
    assert sum("legacy API token" in r.getMessage() for r in caplog.records) == 1  # one startup warning
    assert "legacy-token" not in result.output


def test_an_api_token_refused_in_the_worker_shows_in_the_webs_health(fake: FakeZendesk, tmp_path: Path) -> None:
    """On 30 April 2027 every API token stops working: the worker's calls see it first, and the web process
    (which seldom calls Zendesk) must show it on /health and in the admin UI, through the database."""
    settings = make_settings(tmp_path, zendesk_oauth_client_id="", zendesk_oauth_client_secret="",
                             zendesk_email="bot@example.com", zendesk_api_token="legacy-token")
    web, worker = Services(settings), Services(settings)  # two processes, one database
    health = create_app(services=web).test_client()
    with pytest.raises(AuthFailed):
        worker.platforms["zendesk"].list_groups()
    assert health.get("/health").json["platforms"]["zendesk"] == {
        "configured": True, "auth": "api_token", "status": "auth_failing"}
    status = web.platforms["zendesk"].auth_status()
    assert "refused the API token" in status["error"] and "legacy-token" not in str(status)
    fake.refuse_basic = False  # the token works again (before the switch-off, an admin re-enabled it)
    worker.platforms["zendesk"].list_groups()
    assert health.get("/health").json["platforms"]["zendesk"]["status"] == "ok"


def test_after_the_shutoff_an_api_token_is_refused_with_the_same_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import date

    monkeypatch.setattr("platforms.zendesk.API_TOKEN_SHUTOFF", date(2026, 1, 1))  # as it will be on that day
    api_token_env(monkeypatch, tmp_path)
    result = CliRunner().invoke(main, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "FIX  zendesk: Zendesk switches every API token off on 30 April 2027" in result.output
    health = create_app(make_settings(tmp_path, zendesk_oauth_client_id="", zendesk_oauth_client_secret="",
                                      zendesk_email="bot@example.com", zendesk_api_token="t")).test_client()
    body = health.get("/health").json["platforms"]["zendesk"]
    assert body["configured"] is False and "30 April 2027" in body["reason"]


def test_doctor_on_oauth_says_who_deskroute_acts_as(fake: FakeZendesk, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cli_environment(monkeypatch, tmp_path, database_url(tmp_path, "d.db"), ZENDESK_SUBDOMAIN="acme",
                    ZENDESK_OAUTH_CLIENT_ID=OAUTH_CLIENT_ID, ZENDESK_OAUTH_CLIENT_SECRET=OAUTH_CLIENT_SECRET,
                    ZENDESK_WEBHOOK_SECRET="s", DESKROUTE_MAPPINGS_DIR=str(PROJECT / "mappings"))
    result = CliRunner().invoke(main, ["doctor"], catch_exceptions=False)
    assert "ok   zendesk: signed in with OAuth (client credentials), acting as Deskroute <deskroute@example.com>" \
        in result.output
    fake.oauth.revoke_client(OAUTH_CLIENT_ID)
    result = CliRunner().invoke(main, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "FIX  zendesk: can't sign in: Zendesk refused the OAuth client (invalid_client)" in result.output


@ZENDESK_HARNESS
def test_our_writes_are_told_from_agents_under_a_connect_flow_token(env: Env) -> None:
    fake = env.helpdesk.fake
    zendesk = env.services.platforms["zendesk"]
    connected(fake, zendesk.tokens.vault)  # Ada (user 900002) connected: our writes are hers now
    env.create(8)
    drain(env.services)
    [write_audit] = [a for a in fake.audits[8] if a["via"]["channel"] == "api"]
    assert write_audit["author_id"] == 900002
    env.reroute(8, 360000000103)
    drain(env.services)
    [correction] = env.services.store.corrections.find()
    assert correction["agent_id"] == "555" and correction["corrected_group_id"] == "360000000103"


# --- review findings: no hammering, no lost connection, no false corrections -------------------------


def test_a_broken_sign_in_does_not_hammer_the_token_endpoint(fake: FakeZendesk) -> None:
    zendesk = platform(TokenProvider(oauth(secret="wrong"), MemoryVault()))
    fake.add_ticket(1, subject="s", description="d")
    for _ in range(20):
        with pytest.raises(AuthFailed, match="invalid_client"):
            zendesk.fetch_ticket("1")
    assert len(fake.calls("POST", "/oauth/tokens")) == 1  # then a cool-down, doubling up to ten minutes


def test_a_user_who_lost_access_does_not_make_every_call_mint_a_token(
        fake: FakeZendesk, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake.oauth, "user_for", lambda token: None)  # the acting admin lost access
    provider = TokenProvider(oauth(), MemoryVault())
    zendesk = platform(provider)
    for _ in range(20):
        with pytest.raises(AuthFailed):
            zendesk.fetch_ticket("1")
    assert len(fake.calls("POST", "/oauth/tokens")) == 2  # the first token, one renewal; then a cool-down
    assert provider.status()["status"] == "auth_failing"


def test_disconnect_revokes_even_an_expired_connection(fake: FakeZendesk) -> None:
    vault = MemoryVault()
    first = connected(fake, vault)
    fake.oauth.expire_access_tokens()
    provider = TokenProvider(oauth(), vault, clock=lambda: time.time() + 3600)  # an idle install
    assert provider.disconnect() is True
    assert vault.load() is None and first.refresh_token not in fake.oauth.refresh_tokens
    assert not fake.oauth.refresh_tokens


def test_a_process_with_another_client_never_overwrites_the_connection(fake: FakeZendesk, tmp_path: Path) -> None:
    store = Store(tmp_path / "d.db")
    store.migrate()
    vault = DbVault(store, "zendesk", secret_key=SECRET_KEY, client_secret=OAUTH_CLIENT_SECRET)
    token = connected(fake, vault)
    fake.oauth.add_client("other", secret="other-secret", user_id=900001)
    other = TokenProvider(oauth(client_id="other", secret="other-secret"),
                          DbVault(store, "zendesk", secret_key=SECRET_KEY, client_secret="other-secret"))
    assert other.token()
    assert vault.load() == token


@ZENDESK_HARNESS
def test_our_writes_before_a_switch_of_identity_stay_ours(env: Env) -> None:
    fake = env.helpdesk.fake
    env.create(9)  # routed on client credentials: the write's author is the client's admin (900001)
    drain(env.services)
    zendesk = env.services.platforms["zendesk"]
    connected(fake, zendesk.tokens.vault)  # then Ada (900002) connects
    zendesk.tokens.connected(zendesk.tokens.vault.load())
    env.reroute(9, 360000000103)
    drain(env.services)
    [correction] = env.services.store.corrections.find()  # the agent's move only, not Deskroute's first write
    assert correction["agent_id"] == "555" and correction["previous_group_id"] != ""


def test_disconnect_during_a_renewal_is_refused_and_the_connection_kept(fake: FakeZendesk, tmp_path: Path) -> None:
    import threading

    store = Store(tmp_path / "d.db")
    store.migrate()
    vault = DbVault(store, "zendesk", secret_key=SECRET_KEY, client_secret=OAUTH_CLIENT_SECRET)
    first = connected(fake, vault)
    renewing, admin = TokenProvider(oauth(), vault), TokenProvider(oauth(), vault)
    fake.slow_next(1.0, method="POST", path="/oauth/tokens")  # Zendesk takes a second to refresh
    worker = threading.Thread(target=lambda: renewing.renew_after_401(first.access_token))
    worker.start()
    time.sleep(0.3)
    with pytest.raises(OAuthError, match="renewal is under way"):
        admin.disconnect()  # it would revoke a token the renewal is about to replace
    worker.join()
    stored = vault.load()
    assert stored is not None and stored.refresh_token in fake.oauth.refresh_tokens  # still connected, still live
    assert admin.disconnect() is True and vault.load() is None  # once the renewal is done, Disconnect works
