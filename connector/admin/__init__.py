"""The admin UI at /admin: overview, mappings, tickets, the model, corrections review and export,
taxonomy suggestions, and the Zendesk connection. One blueprint per page group, all inside the `admin`
blueprint.

Off unless DESKROUTE_ADMIN_PASSWORD is set (every page then says how to turn it on). Every form
carries a signed, expiring CSRF token (flask-wtf), the session cookie is HttpOnly, SameSite=Lax and
Secure, and repeated wrong passwords from one address are throttled (connector/admin/gate.py).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask
from flask_wtf.csrf import generate_csrf

from connector.admin import auth, connection, corrections, mappings, model, overview, suggestions, tickets
from connector.admin.gate import LoginThrottle, PasswordCheck, password_problem, session_key

if TYPE_CHECKING:
    from connector.services import Services

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")
bp.before_request(auth.guard)
for page in (auth, overview, mappings, tickets, model, corrections, suggestions, connection):
    bp.register_blueprint(page.bp)


def _when(stamp: float | None) -> str:
    """An epoch time as the admin pages show it: minutes, UTC."""
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


@bp.context_processor
def _csrf() -> dict[str, Any]:
    return {"csrf_token": generate_csrf, "role": auth.current_role}


bp.add_app_template_filter(json.loads, "fromjson")
bp.add_app_template_filter(_when, "when")


def init_admin(app: Flask, services: Services) -> None:
    """Add /admin to the app (it expects `app.extensions["deskroute"]` to hold the services)."""
    settings = services.settings
    given = settings.deskroute_admin_password.get_secret_value()
    off = password_problem(given)
    if off and given:
        log.warning("admin UI off: the password is too short")
    if not given or not off:  # without a shared password, named users may still sign in; too short: no sessions
        app.config["SECRET_KEY"] = session_key(settings.deskroute_secret_key.get_secret_value(), services.store,
                                               given)
    app.config.update(
        SESSION_COOKIE_NAME="deskroute_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.deskroute_secure_cookies,
        PERMANENT_SESSION_LIFETIME=8 * 3600,
    )
    app.extensions[auth.EXTENSION] = auth.AdminState(
        off=off, password=None if off else PasswordCheck(given), named_only=not given,
        throttle=LoginThrottle(services.store, clock=services.clock))
    app.register_blueprint(bp)
