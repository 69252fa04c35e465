"""The admin UI at /admin: login, corrections review, and the corrections export.

Off unless DESKROUTE_ADMIN_PASSWORD is set (every page then says how to turn it on). Every form
carries a signed, expiring CSRF token (flask-wtf), the session cookie is HttpOnly, SameSite=Lax and
Secure, and repeated wrong passwords from one address are throttled.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, session, url_for
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

from connector.corrections import STATUSES, to_csv

if TYPE_CHECKING:
    from connector.services import Services

log = logging.getLogger(__name__)

# Wrong passwords allowed per address in the window before logins from it are refused for a while.
MAX_FAILURES, FAILURE_WINDOW_SECONDS = 5, 15 * 60


class LoginThrottle:
    """Counts recent failed logins per client address (per process)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, who: str) -> deque[float]:
        failures = self._failures[who]
        while failures and failures[0] < self.clock() - FAILURE_WINDOW_SECONDS:
            failures.popleft()
        return failures

    def retry_after(self, who: str) -> int:
        """Seconds until this address may try again (0: now)."""
        failures = self._recent(who)
        if len(failures) < MAX_FAILURES:
            return 0
        return int(failures[0] + FAILURE_WINDOW_SECONDS - self.clock()) + 1

    def failed(self, who: str) -> None:
        self._recent(who).append(self.clock())

    def succeeded(self, who: str) -> None:
        self._failures.pop(who, None)


def _secret_key(services: Services) -> str:
    settings = services.settings
    explicit = settings.deskroute_secret_key.get_secret_value()
    if explicit:
        return explicit
    password = settings.deskroute_admin_password.get_secret_value()
    return hashlib.sha256(f"deskroute-session:{password}".encode()).hexdigest()


def _timestamp(value: str | None, name: str) -> float | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        abort(400, f"{name} must be an ISO 8601 date or time")
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def init_admin(app: Flask, services: Services) -> None:
    """Add /admin to the app."""
    settings = services.settings
    password = settings.deskroute_admin_password.get_secret_value()
    app.config.update(
        SECRET_KEY=_secret_key(services),
        SESSION_COOKIE_NAME="deskroute_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.deskroute_secure_cookies,
        PERMANENT_SESSION_LIFETIME=8 * 3600,
    )
    throttle = LoginThrottle()
    bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

    @bp.before_request
    def guard() -> Any:
        if not password:
            return Response("The admin UI is off: set DESKROUTE_ADMIN_PASSWORD to turn it on.\n", status=503,
                            mimetype="text/plain")
        if request.method == "POST":
            try:
                validate_csrf(request.form.get("csrf_token"))
            except ValidationError as exc:
                log.info("admin form refused", extra={"why": "csrf", "path": request.path})
                abort(400, f"The form has expired or was not sent by this site ({exc}). Reload and retry.")
        return None

    def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not session.get("admin"):
                return redirect(url_for("admin.login", next=request.path))
            return view(*args, **kwargs)
        return wrapper

    @bp.context_processor
    def csrf() -> dict[str, Any]:
        return {"csrf_token": generate_csrf}

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        who = request.remote_addr or "unknown"
        error = None
        if request.method == "POST":
            wait = throttle.retry_after(who)
            if wait:
                log.warning("admin login throttled", extra={"client": who})
                return render_template("admin/login.html", error=f"Too many attempts. Try again in {wait // 60 + 1}"
                                       " minutes."), 429, {"Retry-After": str(wait)}
            if hmac.compare_digest(request.form.get("password", "").encode(), password.encode()):
                throttle.succeeded(who)
                session.clear()
                session["admin"] = True
                session.permanent = True
                target = request.args.get("next", "")
                return redirect(target if target.startswith("/admin") else url_for("admin.corrections"))
            throttle.failed(who)
            log.info("admin login failed", extra={"client": who})
            error = "Wrong password."
        return render_template("admin/login.html", error=error), 401 if error else 200

    @bp.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("admin.login"))

    @bp.get("/")
    @login_required
    def corrections() -> Any:
        status = request.args.get("status") or "pending"
        if status not in (*STATUSES, "all"):
            abort(400, "unknown status")
        rows = services.store.corrections(status=None if status == "all" else status, limit=500)
        return render_template("admin/corrections.html", rows=rows, status=status, statuses=STATUSES,
                               categories=list(services.taxonomy.categories))

    @bp.post("/corrections/<int:correction_id>")
    @login_required
    def review(correction_id: int) -> Any:
        action = request.form.get("action")
        if action not in ("accept", "reject"):
            abort(400, "action must be accept or reject")
        label = request.form.get("label") or None
        if label is not None and label not in services.taxonomy.categories:
            abort(400, "label must be a category")
        status = "accepted" if action == "accept" else "rejected"
        if not services.store.review_correction(correction_id, status=status, reviewer="admin",
                                                now=services.clock(), label=label):
            abort(404)
        return redirect(url_for("admin.corrections", status=request.args.get("status", "pending")))

    @bp.get("/corrections.csv")
    @login_required
    def corrections_csv() -> Response:
        status = request.args.get("status") or None
        if status is not None and status not in STATUSES:
            abort(400, "unknown status")
        rows = services.store.corrections(since=_timestamp(request.args.get("since"), "since"),
                                          until=_timestamp(request.args.get("until"), "until"),
                                          category=request.args.get("category") or None, status=status)
        return Response(to_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="deskroute-corrections.csv"'})

    app.register_blueprint(bp)
