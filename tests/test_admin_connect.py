"""/admin/zendesk: "Connect Zendesk" (authorization code + PKCE) against the loopback Zendesk's OAuth
server, Disconnect, and what the page shows (never a whole token)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from connector import create_app
from connector.services import Services
from helpers import ADMIN_PASSWORD, HTTPS, csrf, login, make_settings
from platforms.fakes.zendesk import FakeZendesk
from platforms.zendesk_oauth import AUTHORIZATION_CODE

SECRET_KEY = "an-install-secret-key-of-40-characters!!"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeZendesk]:
    fake = FakeZendesk(groups={360000000100: "Triage"}, refuse_basic=True)
    netloc = fake.start()
    monkeypatch.setenv("ZENPY_FORCE_NETLOC", netloc)
    monkeypatch.setenv("ZENPY_FORCE_SCHEME", "http")
    yield fake
    fake.stop()


def admin_client(tmp_path: Path, **settings: Any) -> tuple[Any, Services]:
    settings = {"deskroute_admin_password": ADMIN_PASSWORD, "deskroute_secret_key": SECRET_KEY, **settings}
    services = Services(make_settings(tmp_path, **settings))
    client = create_app(services=services).test_client()
    assert login(client).status_code == 302
    return client, services


@pytest.fixture
def admin(tmp_path: Path, fake: FakeZendesk) -> tuple[Any, Services]:
    return admin_client(tmp_path)


def connected(services: Services) -> bool:
    """Whether a Connect-flow connection is stored (client-credentials tokens don't count)."""
    token = services.platforms["zendesk"].tokens.vault.load()
    return token is not None and token.grant == AUTHORIZATION_CODE


def start_connect(client: Any) -> dict[str, str]:
    """Click Connect: returns the query of the consent URL Deskroute sent the browser to."""
    response = client.post("/admin/zendesk/connect", data={"csrf_token": csrf(client, "/admin/zendesk")}, **HTTPS)
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert target.path == "/oauth/authorizations/new"
    return {k: v[0] for k, v in parse_qs(target.query).items()}


def consent(fake: FakeZendesk, query: dict[str, str], decision: str = "allow") -> dict[str, str]:
    """The admin clicks Allow (or Deny) on Zendesk's page: returns the query Zendesk redirects back with."""
    page = requests.get(f"http://{fake.address}/oauth/authorizations/new", params=query, timeout=5)
    assert page.status_code == 200 and "Allow" in page.text
    answer = requests.post(f"http://{fake.address}/oauth/authorizations", data={**query, "decision": decision},
                           allow_redirects=False, timeout=5)
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/admin/zendesk/callback"
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def callback(client: Any, query: dict[str, str]) -> str:
    """Zendesk's redirect lands on the callback; returns the page it sends the admin on to."""
    response = client.get("/admin/zendesk/callback", query_string=query, **HTTPS)
    assert response.status_code == 302
    return client.get(response.headers["Location"], **HTTPS).get_data(as_text=True)


def test_connect_zendesk_stores_an_encrypted_connection_that_every_call_then_uses(
        admin: tuple[Any, Services], fake: FakeZendesk) -> None:
    client, services = admin
    before = client.get("/admin/zendesk", **HTTPS).get_data(as_text=True)
    assert "OAuth: client credentials" in before and 'id="connect"' in before
    query = start_connect(client)
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == "https://localhost/admin/zendesk/callback" and query["scope"] == "read write"
    assert "code_verifier" not in query and len(query["state"]) >= 32
    page = callback(client, consent(fake, query))
    assert "Connected to Zendesk as Ada Admin &lt;ada@example.com&gt;" in page
    assert "OAuth: connected by an admin" in page and 'id="disconnect"' in page
    zendesk = services.platforms["zendesk"]
    stored = zendesk.tokens.vault.load()
    assert stored.grant == AUTHORIZATION_CODE and stored.refresh_token and stored.scope == "read write"
    assert stored.access_token not in page and stored.access_token[-4:] in page  # the last 4 only
    assert zendesk.whoami()["email"] == "ada@example.com"  # the API now acts as the admin who consented
    health = client.get("/health").json["platforms"]["zendesk"]
    assert health == {"configured": True, "auth": "oauth_authorization_code", "status": "ok"}


def test_disconnect_revokes_the_token_and_goes_back_to_client_credentials(
        admin: tuple[Any, Services], fake: FakeZendesk) -> None:
    client, services = admin
    callback(client, consent(fake, start_connect(client)))
    zendesk = services.platforms["zendesk"]
    token = zendesk.tokens.vault.load().access_token
    response = client.post("/admin/zendesk/disconnect", data={"csrf_token": csrf(client, "/admin/zendesk")},
                           **HTTPS)
    page = client.get(response.headers["Location"], **HTTPS).get_data(as_text=True)
    assert "Disconnected. Deskroute now signs in with the client-credentials grant." in page
    assert token not in fake.oauth.access_tokens  # revoked in Zendesk too
    assert zendesk.whoami()["name"] == "Deskroute"  # the client's own admin again


def test_a_callback_that_is_not_ours_is_refused(admin: tuple[Any, Services], fake: FakeZendesk) -> None:
    client, services = admin
    answer = consent(fake, start_connect(client))
    page = callback(client, {**answer, "state": "forged-state"})
    assert "doesn&#39;t match a Connect started here" in page
    assert not connected(services)  # nothing stored
    assert callback(client, answer).count("doesn&#39;t match") == 1  # the pending state was spent


def test_a_code_is_bound_to_its_pkce_verifier(admin: tuple[Any, Services], fake: FakeZendesk) -> None:
    client, services = admin
    first = consent(fake, start_connect(client))
    second = start_connect(client)  # a new Connect: new state and verifier in the session
    page = callback(client, {"code": first["code"], "state": second["state"]})
    assert "Zendesk refused the authorization code (invalid_grant" in page
    assert not connected(services)


def test_an_admin_who_denies_access_sees_why(admin: tuple[Any, Services], fake: FakeZendesk) -> None:
    client, _ = admin
    page = callback(client, consent(fake, start_connect(client), decision="deny"))
    assert "Zendesk did not connect: access_denied" in page


def test_connect_is_off_without_a_secret_key_and_says_why(tmp_path: Path, fake: FakeZendesk) -> None:
    client, _ = admin_client(tmp_path, deskroute_secret_key="")
    page = client.get("/admin/zendesk", **HTTPS).get_data(as_text=True)
    assert "Connect Zendesk is off: set DESKROUTE_SECRET_KEY" in page and 'id="connect"' not in page
    response = client.post("/admin/zendesk/connect", data={"csrf_token": csrf(client, "/admin/zendesk")}, **HTTPS)
    assert response.status_code == 409


def test_a_public_client_connects_with_pkce_alone(tmp_path: Path, fake: FakeZendesk) -> None:
    fake.oauth.add_client("deskroute-public", secret=None, user_id=900001)
    client, services = admin_client(tmp_path, zendesk_oauth_client_id="deskroute-public",
                                     zendesk_oauth_client_secret="")
    assert services.platforms["zendesk"].auth_status() == {"auth": "oauth", "status": "not_connected"}
    attention = ["zendesk: not connected: an admin connects it in the admin UI (/admin/zendesk); events wait meanwhile"]
    assert client.get("/health").json["attention"] == attention  # monitors alert on it
    page = callback(client, consent(fake, start_connect(client)))
    assert "Connected to Zendesk as Ada Admin" in page
    assert services.platforms["zendesk"].auth_status()["status"] == "ok"
    assert client.get("/health").json["attention"] == []


def test_the_connection_page_needs_a_login(tmp_path: Path, fake: FakeZendesk) -> None:
    services = Services(make_settings(tmp_path, deskroute_admin_password=ADMIN_PASSWORD,
                                      deskroute_secret_key=SECRET_KEY))
    client = create_app(services=services).test_client()
    assert client.get("/admin/zendesk", **HTTPS).status_code == 302
    assert client.get("/admin/zendesk/callback?code=x&state=y", **HTTPS).status_code == 302


def test_connect_logs_no_token_code_or_verifier_and_leaves_none_in_the_session(
        admin: tuple[Any, Services], fake: FakeZendesk, caplog: pytest.LogCaptureFixture) -> None:
    from flask.sessions import SecureCookieSessionInterface

    client, services = admin
    caplog.set_level("DEBUG")
    query = start_connect(client)
    ours = list(caplog.records)
    answer = consent(fake, query)  # the browser's requests (this test's own) are not Deskroute's to scan
    caplog.clear()
    callback(client, answer)
    ours += caplog.records
    stored = services.platforms["zendesk"].tokens.vault.load()
    secrets_seen = [stored.access_token, stored.refresh_token, answer["code"], query["state"]]
    assert any(r.getMessage() == "zendesk connected" for r in ours)  # the scan saw the exchange's records
    for record in ours:
        line = f"{record.getMessage()} {record.__dict__}"
        assert not any(secret in line for secret in secrets_seen), line[:200]
    app = create_app(services=services)
    cookie = client.get_cookie("deskroute_session", domain="localhost")
    session = SecureCookieSessionInterface().get_signing_serializer(app).loads(cookie.value)  # type: ignore[union-attr]
    assert "zendesk_oauth" not in session  # the verifier was spent with the code
