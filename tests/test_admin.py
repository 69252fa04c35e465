"""The admin UI's gate: off without a password, login, throttling, CSRF, cookie flags, review."""

from __future__ import annotations

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


def test_a_wrong_password_is_refused(client: Any) -> None:
    response = login(client, "guess")
    assert response.status_code == 401 and "Wrong password" in response.get_data(as_text=True)
    assert client.get("/admin/", **HTTPS).status_code == 302


def test_repeated_wrong_passwords_are_throttled_per_address(client: Any) -> None:
    for _ in range(5):
        assert login(client, "guess").status_code == 401
    response = login(client)  # even the right one, from this address, for a while
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert login(client, environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 302  # another address


def test_a_post_without_the_csrf_token_is_refused(client: Any) -> None:
    response = client.post("/admin/login", data={"password": PASSWORD}, **HTTPS)
    assert response.status_code == 400 and "form has expired or was not sent by this site" in response.json["error"]
    login(client)
    assert client.post("/admin/logout", **HTTPS).status_code == 400  # logged in or not


def test_review_in_the_ui(client: Any, admin_services: Services) -> None:
    admin_services.store.add_correction({
        "platform": "zendesk", "ticket_id": "5", "change_id": "x", "seq": 1, "text": "t",
        "predicted_category": "billing", "predicted_group_id": "1", "predicted_tier": "local",
        "predicted_confidence": 0.8, "previous_group_id": "1", "corrected_group_id": "2",
        "corrected_category": "unmapped:2", "routed_at": 1.0, "rerouted_at": 2.0, "status": "pending",
        "created_at": 2.0})
    login(client)
    page = client.get("/admin/corrections", **HTTPS).get_data(as_text=True)
    assert "zendesk #5" in page and "unmapped:2" in page
    [row] = admin_services.store.corrections()
    token = csrf(client, "/admin/corrections")
    response = client.post(f"/admin/corrections/{row['id']}", data={"action": "accept", "label": "bug_report",
                                                                  "csrf_token": token}, **HTTPS)
    assert response.status_code == 302
    [row] = admin_services.store.corrections()
    assert (row["status"], row["label"], row["reviewed_by"]) == ("accepted", "bug_report", "admin")
    bad = client.post(f"/admin/corrections/{row['id']}", data={"action": "accept", "label": "nope",
                                                             "csrf_token": token}, **HTTPS)
    assert bad.status_code == 400
