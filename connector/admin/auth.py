"""Who may use the admin UI: `login_required`, the login and logout pages, and the checks every admin
request passes first (the UI is on, the form's CSRF token is valid).

The per-app state (the password check, the login throttle) lives in `app.extensions`, so that views
are plain module functions and every app built in one process (tests build many) keeps its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import validate_csrf
from wtforms.validators import ValidationError

from connector.admin.gate import SHARED_USER, LoginThrottle, PasswordCheck, user_name, verify_password

if TYPE_CHECKING:
    from connector.services import Services

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
EXTENSION = "deskroute.admin"


@dataclass
class AdminState:
    """What the admin UI needs beyond the services: why it is off (if it is), the password, the throttle."""

    off: str | None
    password: PasswordCheck | None
    throttle: LoginThrottle
    named_only: bool = False  # no shared password: on while named users exist (`deskroute users add`)
    cache: dict[str, Any] = field(default_factory=dict)  # short-lived answers from the helpdesk


def admin_state() -> AdminState:
    return cast(AdminState, current_app.extensions[EXTENSION])


def once_a_minute(kind: str, key: str, ask: Callable[[], Any]) -> Any:
    """`ask()`'s answer, asked at most once a minute by this process per (kind, key): pages that show what the
    helpdesk says must not spend its API rate on every reload. The last key of a kind is all that is kept."""
    cache = admin_state().cache.setdefault(kind, {})
    cached = cache.get(key)
    if cached and time.monotonic() - cached[0] < 60:
        return cached[1]
    answer = ask()
    cache.clear()
    cache[key] = (time.monotonic(), answer)
    return answer


def services() -> Services:
    return cast("Services", current_app.extensions["deskroute"])


# What a team lead may change: they read every page, and review corrections. Everything else that changes
# something (the routing, the helpdesk connection, models, retries) is an admin's.
LEAD_WRITES = frozenset({"admin.corrections.review"})
# A session lapses after 8 idle hours (the cookie's lifetime, renewed by use) and 12 hours after sign-in.
SESSION_MAX_SECONDS = 12 * 3600
ADMIN_READS = frozenset({"admin.zendesk.callback"})  # a GET that finishes connecting Zendesk


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Send a visitor who hasn't signed in to the login page, and back here afterwards. A named user's
    session ends as soon as the user is removed or their password changed, and their role is the stored one
    (one indexed read a request). A team lead's change other than a review is refused."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not session.get("admin"):
            return redirect(url_for("admin.auth.login", next=request.path))
        if not _still_valid():
            session.clear()
            return redirect(url_for("admin.auth.login", next=request.path))
        writes = request.method not in ("GET", "HEAD", "OPTIONS") and request.endpoint not in LEAD_WRITES
        if current_role() != "admin" and (writes or request.endpoint in ADMIN_READS):
            log.info("admin action refused to a team lead", extra={"user": current_user(), "path": request.path})
            abort(403, "Team leads review corrections and read every page; ask an admin to change this "
                       "(`deskroute users role NAME admin`).")
        return view(*args, **kwargs)
    return wrapper


def current_user() -> str:
    """Who is signed in: a named user, or "admin" for the shared password. Reviews and edits carry it."""
    return str(session.get("user") or SHARED_USER)


def current_role() -> str:
    """"admin" (the shared password, or a named admin) or "lead", as stored now; "" before a sign-in."""
    if not session.get("admin"):
        return ""
    return "admin" if current_user() == SHARED_USER else str(g.get("role", ""))


def _still_valid() -> bool:
    signed_in_at = session.setdefault("at", services().clock())  # signed in by an older release: from now
    if not isinstance(signed_in_at, int | float) or services().clock() - signed_in_at > SESSION_MAX_SECONDS:
        return False  # in use all day or not, a session ends: a captured cookie can't be kept alive for ever
    user = current_user()
    if user == SHARED_USER:
        return True  # a new DESKROUTE_ADMIN_PASSWORD changes the signing key, which ends these sessions
    row = services().store.users.get(user)
    g.role = row.role if row else ""
    return row is not None and row.updated_at == session.get("since")


def guard() -> Any:
    """Runs before every admin request: the UI is on, and a form was sent by this site (its CSRF token)."""
    state = admin_state()
    if state.off and not (state.named_only and services().store.users.exist()):
        return Response(state.off + "\n", status=503, mimetype="text/plain")
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            log.info("admin form refused", extra={"why": "csrf", "path": request.path})
            page = request.headers.get("Origin") or request.headers.get("Referer") or ""
            if (current_app.config.get("SESSION_COOKIE_SECURE") and not request.is_secure
                    and not page.startswith("https://")  # behind an HTTPS proxy Deskroute isn't told of
                    and current_app.config["SESSION_COOKIE_NAME"] not in request.cookies):
                # The browser never sent the HTTPS-only session cookie back: reloading can't help.
                abort(400, "This page was opened over http://, but the admin session cookie is HTTPS-only, so the "
                           "browser doesn't send it back. Open the admin UI over https://, or, on a trusted network "
                           "only, set DESKROUTE_SECURE_COOKIES=false and restart Deskroute.")
            abort(400, f"The form has expired or was not sent by this site ({exc}). Reload and retry.")
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    state = admin_state()
    who = request.remote_addr or "unknown"
    error = None
    if request.method == "POST":
        name = request.form.get("name", "")
        keys = state.throttle.keys(who, name)
        wait = state.throttle.attempt(keys)  # counted before the check: parallel guesses can't all slip through
        if wait:
            log.warning("admin login throttled", extra={"client": who})
            later = f"{wait} seconds" if wait < 120 else f"{wait // 60 + 1} minutes"
            return render_template("admin/login.html", error=f"Too many attempts. Try again in {later}.",
                                   shared=state.password is not None), \
                429, {"Retry-After": str(wait)}
        user = _check(state.password, name, request.form.get("password", ""))
        if user:
            state.throttle.succeeded(keys)
            session.clear()
            session["admin"] = True
            session["user"], session["since"] = user
            session["at"] = services().clock()
            session.permanent = True
            log.info("admin signed in", extra={"user": user[0], "client": who})
            target = request.args.get("next", "")
            # Only a path on this UI: a "next" pointing at another site must not become an open redirect.
            safe = target.startswith("/admin") and target.isprintable()  # no CR/LF for a header to choke on
            return redirect(target if safe else url_for("admin.overview.index"))
        log.info("admin login failed", extra={"client": who})
        if name.strip():
            error = "Wrong name or password."
        else:
            error = "Wrong password." if state.password else "Sign in with your name: there is no shared password."
    return render_template("admin/login.html", error=error, shared=state.password is not None), 401 if error else 200


def _check(shared: PasswordCheck | None, name: str, password: str) -> tuple[str, float | None] | None:
    """(who, their password's date) if the name and password match: no name is the shared password."""
    if not name.strip():
        return (SHARED_USER, None) if shared is not None and shared.matches(password) else None
    try:
        row = services().store.users.get(user_name(name))
    except ValueError:
        row = None
    # A hash is derived even for an unknown name, so timing doesn't tell which names exist.
    if verify_password(password, row.password_hash if row else None) and row is not None:
        return row.name, row.updated_at
    return None


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("admin.auth.login"))
