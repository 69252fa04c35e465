"""The admin UI's gate: off without a password, login, throttling, CSRF, cookie flags, review."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from connector import create_app
from connector.services import Services
from helpers import ADMIN_PASSWORD as PASSWORD
from helpers import HTTPS, csrf, login


@pytest.fixture
def admin_services(make_services: Any) -> Services:
    return make_services(deskroute_admin_password=PASSWORD)


@pytest.fixture
def client(admin_services: Services) -> Any:
    return create_app(services=admin_services).test_client()


def test_without_a_password_the_ui_is_off_and_says_why(services: Services) -> None:
    client = create_app(services=services).test_client()
    for path in ("/admin/", "/admin/login", "/admin/corrections.csv"):
        response = client.get(path, **HTTPS)
        assert response.status_code == 503
        assert "set DESKROUTE_ADMIN_PASSWORD" in response.get_data(as_text=True)


def test_login_sets_a_hardened_session_cookie(client: Any) -> None:
    assert client.get("/admin/", **HTTPS).status_code == 302
    response = login(client)
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/")
    cookie = response.headers["Set-Cookie"]
    assert "deskroute_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "SameSite=Lax" in cookie
    assert client.get("/admin/", **HTTPS).status_code == 200


def test_over_plain_http_the_login_says_why_it_cannot_work(client: Any) -> None:
    """The session cookie is HTTPS-only: over http:// the browser never sends it back, so the form's token
    can't match, and "reload and retry" would never help. The page says what to do instead."""
    token = csrf(client, "/admin/login")  # the page, served over http://
    browser = client.application.test_client()  # which drops the Secure cookie, as a browser does over http
    response = browser.post("/admin/login", data={"csrf_token": token, "password": PASSWORD})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "opened over http://" in page and "DESKROUTE_SECURE_COOKIES" in page
    over_https = client.post("/admin/login", data={"csrf_token": "forged", "password": PASSWORD}, **HTTPS)
    assert over_https.status_code == 400 and "Reload and retry" in over_https.get_data(as_text=True)
    # Behind a TLS proxy Deskroute isn't told of (http:// as it sees it), the browser does send the cookie:
    # a stale form is just that, and the advice to weaken cookies would be wrong.
    proxied = client.post("/admin/login", data={"csrf_token": "stale", "password": PASSWORD})
    assert "Reload and retry" in proxied.get_data(as_text=True) and "http://" not in proxied.get_data(as_text=True)
    expired = browser.post("/admin/login", data={"csrf_token": "stale", "password": PASSWORD},  # no cookie left
                           headers={"Origin": "https://deskroute.example.com"})
    assert "Reload and retry" in expired.get_data(as_text=True) and "http://" not in expired.get_data(as_text=True)


def test_a_session_ends_twelve_hours_after_sign_in_even_in_use(client: Any, clock: Any) -> None:
    """Use renews the cookie's 8 idle hours; a captured cookie must not be kept alive for ever that way."""
    login(client)
    for _ in range(11):
        clock.advance(3600)
        assert client.get("/admin/", **HTTPS).status_code == 200
    clock.advance(3601)
    assert client.get("/admin/", **HTTPS).status_code == 302  # to the login page
    login(client)
    assert client.get("/admin/", **HTTPS).status_code == 200
    with client.session_transaction(**HTTPS) as session:
        del session["at"]  # signed in by the release before this one, mid-deploy: kept, counted from now
    assert client.get("/admin/", **HTTPS).status_code == 200
    clock.advance(12 * 3600 + 1)
    assert client.get("/admin/", **HTTPS).status_code == 302


def test_a_wrong_password_is_refused(client: Any) -> None:
    response = login(client, "guess")
    assert response.status_code == 401 and "Wrong password" in response.get_data(as_text=True)
    assert client.get("/admin/", **HTTPS).status_code == 302


def test_wrong_passwords_slow_an_address_down_with_growing_delays(client: Any, clock: Any) -> None:
    for _ in range(3):
        assert login(client, "guess").status_code == 401
    response = login(client)  # even the right one, from this address, for a moment
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    clock.advance(2)
    assert login(client, "guess again").status_code == 401
    assert login(client).headers["Retry-After"] == "4"  # doubling, up to 15 minutes
    assert login(client, environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 302  # another address
    clock.advance(4)
    assert login(client).status_code == 302  # the real admin gets in after seconds, not a lock-out


def test_the_login_page_gives_nothing_to_test_password_guesses_against(client: Any) -> None:
    """Its signed cookie and CSRF token must not be checkable offline with a guessed password."""
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface
    from itsdangerous import BadSignature

    response = client.get("/admin/login", **HTTPS)
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("deskroute_session="))
    value = cookie.split(";")[0].split("=", 1)[1]
    for guess in (PASSWORD, "wrong guess"):
        attacker = Flask("attacker")
        attacker.secret_key = hashlib.sha256(f"deskroute-session:{guess}".encode()).hexdigest()
        serializer = SecureCookieSessionInterface().get_signing_serializer(attacker)
        assert serializer is not None
        with pytest.raises(BadSignature):
            serializer.loads(value)


def test_one_installs_processes_share_the_random_signing_key(admin_services: Services, tmp_path: Any) -> None:
    from connector.settings import Settings

    first = create_app(services=admin_services).test_client()
    login(first)
    cookie = first.get_cookie("deskroute_session", domain="localhost")
    other = Services(Settings(_env_file=None, **{**admin_services.settings.model_dump(), "zendesk_subdomain": ""}))
    second = create_app(services=other).test_client()  # another gunicorn worker, or machine
    second.set_cookie("deskroute_session", cookie.value, domain="localhost")
    assert second.get("/admin/", **HTTPS).status_code == 200
    for _ in range(3):  # and one failure count: wrong passwords on one count on the other
        login(first, "guess")
    assert login(second, "guess").status_code == 429


def test_changing_the_password_ends_every_session(admin_services: Services) -> None:
    from connector.settings import Settings

    before = create_app(services=admin_services).test_client()
    login(before)
    cookie = before.get_cookie("deskroute_session", domain="localhost")
    changed = Settings(_env_file=None, **{**admin_services.settings.model_dump(),
                                          "deskroute_admin_password": "a brand new passphrase"})
    after = create_app(services=Services(changed)).test_client()  # restarted with the new password
    after.set_cookie("deskroute_session", cookie.value, domain="localhost")
    assert after.get("/admin/", **HTTPS).status_code == 302  # back to the login page


def test_a_short_secret_key_never_signs_sessions(make_services: Any) -> None:
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface
    from itsdangerous import BadSignature

    client = create_app(services=make_services(deskroute_admin_password=PASSWORD,
                                               deskroute_secret_key="short")).test_client()
    value = client.get("/admin/login", **HTTPS).headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    for guess in ("short", "short" + PASSWORD):
        attacker = Flask("attacker")
        attacker.secret_key = guess
        with pytest.raises(BadSignature):
            SecureCookieSessionInterface().get_signing_serializer(attacker).loads(value)  # type: ignore[union-attr]


def test_a_short_password_keeps_the_ui_off_and_says_why(make_services: Any) -> None:
    client = create_app(services=make_services(deskroute_admin_password="hunter2")).test_client()
    response = client.get("/admin/login", **HTTPS)
    assert response.status_code == 503 and "shorter than 12 characters" in response.get_data(as_text=True)


def test_behind_a_trusted_proxy_each_client_is_throttled_not_the_proxy(make_services: Any) -> None:
    behind = create_app(services=make_services(deskroute_admin_password=PASSWORD,
                                               deskroute_trusted_proxies=1)).test_client()
    attacker = {"environ_base": {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}}
    for _ in range(5):
        login(behind, "guess", **attacker)
    admin = {"environ_base": {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.2"}}
    assert login(behind, **admin).status_code == 302


def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(client: Any) -> None:
    for n in range(4):  # an attacker varying X-Forwarded-For is still one address
        login(client, "guess", environ_base={"HTTP_X_FORWARDED_FOR": f"192.0.2.{n}"})
    assert login(client, "guess", environ_base={"HTTP_X_FORWARDED_FOR": "192.0.2.99"}).status_code == 429


def test_a_post_without_the_csrf_token_is_refused(client: Any) -> None:
    response = client.post("/admin/login", data={"password": PASSWORD}, **HTTPS)
    assert response.status_code == 400 and "form has expired or was not sent by this site" in response.json["error"]
    login(client)
    assert client.post("/admin/logout", **HTTPS).status_code == 400  # logged in or not


def add_pending_correction(services: Services) -> None:
    services.store.corrections.add({
        "platform": "zendesk", "ticket_id": "5", "change_id": "x", "seq": 1, "text": "t",
        "predicted_category": "billing", "predicted_group_id": "1", "predicted_tier": "local",
        "predicted_confidence": 0.8, "previous_group_id": "1", "corrected_group_id": "2",
        "corrected_category": "unmapped:2", "routed_at": 1.0, "rerouted_at": 2.0, "status": "pending",
        "created_at": 2.0})


def test_review_in_the_ui(client: Any, admin_services: Services) -> None:
    add_pending_correction(admin_services)
    login(client)
    page = client.get("/admin/corrections", **HTTPS).get_data(as_text=True)
    assert "zendesk #5" in page and "unmapped:2" in page
    [row] = admin_services.store.corrections.find()
    token = csrf(client, "/admin/corrections")
    response = client.post(f"/admin/corrections/{row['id']}", data={"action": "accept", "label": "bug_report",
                                                                  "csrf_token": token}, **HTTPS)
    assert response.status_code == 302
    [row] = admin_services.store.corrections.find()
    assert (row["status"], row["label"], row["reviewed_by"]) == ("accepted", "bug_report", "admin")
    bad = client.post(f"/admin/corrections/{row['id']}", data={"action": "accept", "label": "nope",
                                                             "csrf_token": token}, **HTTPS)
    assert bad.status_code == 400


def test_parallel_guesses_are_counted_before_any_is_checked(client: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tokens = [csrf(client) for _ in range(12)]

    def guess(token: str) -> int:
        return client.post("/admin/login", data={"password": "guess", "csrf_token": token}, **HTTPS).status_code

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(guess, tokens))
    assert answers.count(401) <= 3 + 1 and answers.count(429) >= 8  # the free ones (and a last), then waits


def test_an_ipv6_client_rotating_through_its_block_is_one_client(client: Any) -> None:
    for n in range(4):
        login(client, "guess", environ_base={"REMOTE_ADDR": f"2001:db8:1:2::{n + 1}"})
    assert login(client, environ_base={"REMOTE_ADDR": "2001:db8:1:2:ffff::9"}).status_code == 429
    assert login(client, environ_base={"REMOTE_ADDR": "2001:db8:1:3::1"}).status_code == 302  # another /64


def test_processes_starting_together_make_one_signing_key(tmp_path: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from connector.admin.gate import session_key
    from connector.store import Store

    Store(tmp_path / "k.db").migrate()

    def start() -> str:  # each "process" with its own connection to the install's database
        return session_key("", Store(tmp_path / "k.db"), PASSWORD)

    with ThreadPoolExecutor(6) as pool:
        keys = set(pool.map(lambda _: start(), range(6)))
    assert len(keys) == 1


def test_every_admin_page_but_login_sends_a_stranger_to_the_login(admin_services: Services) -> None:
    """Every admin route, found from the app's URL map (so a page added later is covered too): without a
    session, reading it or posting to it (with a valid CSRF token) leads to the login page, never to the page."""
    app = create_app(services=admin_services)
    client = app.test_client()
    token = csrf(client, "/admin/login")
    open_routes = {"admin.auth.login"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin.") or rule.endpoint in open_routes:
            continue
        path = rule.build({arg: "1" for arg in rule.arguments})[1]
        for method in sorted(rule.methods & {"GET", "POST"}):
            if rule.endpoint == "admin.auth.logout":
                continue  # logging out needs no session: it only clears one
            response = client.open(path, method=method, data={"csrf_token": token} if method == "POST" else None,
                                   **HTTPS)
            assert response.status_code == 302, (rule.endpoint, method, response.status_code)
            assert response.headers["Location"].startswith("/admin/login"), (rule.endpoint, method)
            checked += 1
    assert checked >= 15


def test_admin_views_are_module_functions_not_closures(admin_services: Services) -> None:
    """Each view is importable and testable on its own: none is defined inside a function, where it would
    capture one app's objects (the services come from `app.extensions`)."""
    import inspect

    app = create_app(services=admin_services)
    views = {name: inspect.unwrap(view) for name, view in app.view_functions.items() if name.startswith("admin.")}
    assert len(views) >= 16
    assert [name for name, view in views.items() if "<locals>" in view.__qualname__] == []


@pytest.mark.parametrize(("target", "lands"), [
    ("/admin/model", "/admin/model"),
    ("//evil.example/admin", "/admin/"),
    ("https://evil.example/admin", "/admin/"),
    ("/admin/x\r\nSet-Cookie: a=b", "/admin/"),  # a header split would be a 500 (or worse), not a redirect
])
def test_after_login_only_a_path_on_this_ui_is_followed(client: Any, target: str, lands: str) -> None:
    token = csrf(client, "/admin/login")
    response = client.post("/admin/login", query_string={"next": target},
                           data={"password": PASSWORD, "csrf_token": token}, **HTTPS)
    assert response.status_code == 302 and response.headers["Location"] == lands


# --- named users -----------------------------------------------------------------------------------

MARIA_PASSWORD = "maria's own long password"


def add_maria(services: Services) -> None:
    from connector.admin.gate import hash_password

    assert services.store.users.add("maria@example.com", hash_password(MARIA_PASSWORD), now=services.clock())


def test_a_named_user_signs_in_and_their_review_carries_their_name(client: Any, admin_services: Services) -> None:
    add_maria(admin_services)
    add_pending_correction(admin_services)
    assert login(client, MARIA_PASSWORD, name="  Maria@Example.COM ").status_code == 302  # case and spaces aside
    [row] = admin_services.store.corrections.find()
    client.post(f"/admin/corrections/{row['id']}", data={"action": "reject", "csrf_token": csrf(client, "/admin/")},
                **HTTPS)
    [row] = admin_services.store.corrections.find()
    assert (row["status"], row["reviewed_by"]) == ("rejected", "maria@example.com")
    page = client.get("/admin/corrections?status=all", **HTTPS).get_data(as_text=True)
    assert "by maria@example.com" in page


@pytest.mark.parametrize(("name", "password"), [
    ("maria@example.com", PASSWORD),  # the shared password is not every name's
    ("maria@example.com", "wrong guess"),
    ("nobody", MARIA_PASSWORD),
    ("admin", PASSWORD),  # the shared password's identity is not a name to sign in with
    ("no spaces allowed", MARIA_PASSWORD),
])
def test_a_named_sign_in_needs_that_users_own_password(client: Any, admin_services: Services, name: str,
                                                        password: str) -> None:
    add_maria(admin_services)
    response = login(client, password, name=name)
    assert response.status_code == 401 and "Wrong name or password" in response.get_data(as_text=True)
    assert client.get("/admin/", **HTTPS).status_code == 302


def test_removing_a_user_or_changing_their_password_ends_their_session(client: Any,
                                                                        admin_services: Services) -> None:
    from connector.admin.gate import hash_password

    add_maria(admin_services)
    assert login(client, MARIA_PASSWORD, name="maria@example.com").status_code == 302
    assert client.get("/admin/", **HTTPS).status_code == 200
    admin_services.clock.advance(1)
    admin_services.store.users.set_password("maria@example.com", hash_password("a new password of hers"),
                                            now=admin_services.clock())
    assert client.get("/admin/", **HTTPS).status_code == 302  # the stolen or old cookie is dead
    assert login(client, "a new password of hers", name="maria@example.com").status_code == 302
    assert client.get("/admin/", **HTTPS).status_code == 200
    admin_services.store.users.remove("maria@example.com")
    assert client.get("/admin/", **HTTPS).status_code == 302
    assert login(client, "a new password of hers", name="maria@example.com").status_code == 401


def test_the_shared_password_still_signs_in_as_admin_beside_named_users(client: Any,
                                                                        admin_services: Services) -> None:
    add_maria(admin_services)
    assert login(client).status_code == 302
    page = client.get("/admin/", **HTTPS).get_data(as_text=True)
    assert ">admin</span>" in page


def test_stored_passwords_are_salted_scrypt_hashes_that_check_only_their_password() -> None:
    from connector.admin.gate import hash_password, verify_password

    one, two = hash_password(MARIA_PASSWORD), hash_password(MARIA_PASSWORD)
    assert one != two and MARIA_PASSWORD not in one and one.startswith("scrypt$16384$8$1$")
    assert verify_password(MARIA_PASSWORD, one) and verify_password(MARIA_PASSWORD, two)
    assert not verify_password("maria's own long passworD", one)
    assert not verify_password(MARIA_PASSWORD, None) and not verify_password(MARIA_PASSWORD, "md5$abc")


@pytest.mark.parametrize("name", ["", "bob@example.com", "nobody"])  # the shared password, a colleague's, no one's
def test_signing_in_by_name_does_not_wipe_the_count_of_guesses_at_other_passwords(
        client: Any, admin_services: Services, clock: Any, name: str) -> None:
    """A team lead guessing at the shared password (or colleagues') can't sign in as themselves between
    guesses to start the count again: a success forgets only the signer's own attempts."""
    from connector.admin.gate import hash_password

    add_maria(admin_services)
    admin_services.store.users.add("bob@example.com", hash_password("bob's own long password"), now=clock())
    for _ in range(3):
        assert login(client, "guess", name=name).status_code == 401
    clock.advance(2)  # the address's delay
    assert login(client, MARIA_PASSWORD, name="maria@example.com").status_code == 302
    refused = login(client, "guess", name=name)  # the guesses still count: no fresh free ones
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"


def test_a_users_own_typos_are_forgiven_when_they_sign_in(client: Any, admin_services: Services, clock: Any) -> None:
    add_maria(admin_services)
    for _ in range(3):
        assert login(client, "typo", name="maria@example.com").status_code == 401
    clock.advance(2)
    assert login(client, MARIA_PASSWORD, name="maria@example.com").status_code == 302
    for _ in range(3):  # three free tries again, for anyone at this address
        assert login(client, "guess").status_code == 401


def test_names_that_are_no_users_share_one_count(client: Any, admin_services: Services) -> None:
    """Trying a new name each time neither escapes the count nor fills the table with rows."""
    for n in range(3):
        assert login(client, "guess", name=f"nobody{n}", environ_base={"REMOTE_ADDR": f"10.0.0.{n}"}).status_code == 401
    rows = admin_services.store.db.execute("SELECT client FROM login_failures ORDER BY client")
    assert [r["client"] for r in rows if " as " in r["client"]] == [f"10.0.0.{n} as ?" for n in range(3)]


def test_without_a_shared_password_named_users_sign_in_by_name_only(make_services: Any) -> None:
    services = make_services()  # no DESKROUTE_ADMIN_PASSWORD
    client = create_app(services=services).test_client()
    assert client.get("/admin/login", **HTTPS).status_code == 503  # nobody could sign in
    add_maria(services)
    page = client.get("/admin/login", **HTTPS).get_data(as_text=True)
    assert "shared admin password" not in page
    refused = login(client, "")
    assert refused.status_code == 401 and "there is no shared password" in refused.get_data(as_text=True)
    assert login(client, MARIA_PASSWORD, name="maria@example.com").status_code == 302
    assert client.get("/admin/", **HTTPS).status_code == 200


def test_a_team_lead_reviews_corrections_but_changes_nothing_else(admin_services: Services, clock: Any) -> None:
    """Every admin route that changes something, found from the app's URL map (a page added later is covered
    too): a team lead's POST is refused, but for reviewing a correction; a named admin's is not."""
    from connector.admin.auth import ADMIN_READS, LEAD_WRITES

    app = create_app(services=admin_services)
    client = app.test_client()
    add_maria(admin_services)  # a team lead, the default
    add_pending_correction(admin_services)
    assert login(client, MARIA_PASSWORD, name="maria@example.com").status_code == 302
    page = client.get("/admin/model", **HTTPS).get_data(as_text=True)
    assert '<body class="lead">' in page and "(team lead)" in page  # the buttons she can't use are hidden
    token = csrf(client, "/admin/")
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin.") or rule.endpoint in {"admin.auth.login", "admin.auth.logout",
                                                                        *LEAD_WRITES}:
            continue
        path = rule.build({arg: "1" for arg in rule.arguments})[1]
        if "POST" in rule.methods or rule.endpoint in ADMIN_READS:
            method = "POST" if "POST" in rule.methods else "GET"
            response = client.open(path, method=method, data={"csrf_token": token}, **HTTPS)
            assert response.status_code == 403, (rule.endpoint, response.status_code)
            checked += 1
    assert checked >= 8
    [row] = admin_services.store.corrections.find()
    client.post(f"/admin/corrections/{row['id']}", data={"action": "reject", "csrf_token": token}, **HTTPS)
    assert admin_services.store.corrections.find()[0]["reviewed_by"] == "maria@example.com"
    admin_services.store.users.set_role("maria@example.com", "admin")  # from her next click
    assert client.post("/admin/model/rollback", data={"csrf_token": token}, **HTTPS).status_code == 400  # let in
    assert '<body class="lead">' not in client.get("/admin/model", **HTTPS).get_data(as_text=True)


def test_an_unknown_name_costs_the_same_hashing_as_a_wrong_password(client: Any, admin_services: Services,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing must not tell which names exist: a name that is no user's still derives one scrypt hash."""
    from connector.admin import gate

    add_maria(admin_services)
    derived: list[int] = []
    real = gate._scrypt
    monkeypatch.setattr(gate, "_scrypt", lambda *args: derived.append(1) or real(*args))
    for name in ("maria@example.com", "nobody@example.com", "not a name!"):
        derived.clear()
        assert login(client, "wrong guess", name=name).status_code == 401
        assert len(derived) == 1, name


def test_a_sign_in_logs_who_and_from_where_never_the_password(client: Any, admin_services: Services,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    add_maria(admin_services)
    caplog.set_level("DEBUG")
    login(client, "a wrong password of hers", name="maria@example.com")
    login(client, MARIA_PASSWORD, name="maria@example.com")
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "admin signed in" in logged and "maria@example.com" in logged
    stored = admin_services.store.users.get("maria@example.com")
    assert stored is not None
    for secret in (MARIA_PASSWORD, "a wrong password of hers", stored.password_hash):
        assert secret not in logged
