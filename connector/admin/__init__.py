"""The admin UI at /admin: login, corrections review, and the corrections export.

Off unless DESKROUTE_ADMIN_PASSWORD is set (every page then says how to turn it on). Every form
carries a signed, expiring CSRF token (flask-wtf), the session cookie is HttpOnly, SameSite=Lax and
Secure, and repeated wrong passwords from one address are throttled.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, session, url_for
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

from connector.admin import connection
from connector.admin.charts import heatmap, stacked_bars
from connector.admin.gate import LoginThrottle, PasswordCheck, password_problem, session_key
from connector.config import CategoryEdit, ConfigError, RouteEdit, save_category
from connector.corrections import STATUSES, to_csv
from connector.models import PRIORITIES
from platforms.base import PlatformError

if TYPE_CHECKING:
    from connector.services import Services

log = logging.getLogger(__name__)

def _timestamp(value: str | None, name: str) -> float | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        abort(400, f"{name} must be an ISO 8601 date or time")
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _when(stamp: float | None) -> str:
    """An epoch time as the admin pages show it: minutes, UTC."""
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _words(value: str) -> list[str]:
    return [word.strip() for word in value.split(",") if word.strip()]


def _category_edit(form: dict[str, str], name: str, services: Services) -> CategoryEdit:
    """The mapping form as a CategoryEdit; ConfigError for what the files' validation can't say well."""
    if not name:
        raise ConfigError("a new category needs a name")
    routes = {}
    for platform in services.mappings:
        group_id = form.get(f"{platform}_group_id", "").strip()
        if not group_id:
            raise ConfigError(f"{platform}: choose a group")
        routes[platform] = RouteEdit(group_id=group_id, tags=_words(form.get(f"{platform}_tags", "")),
                                     priority=form.get(f"{platform}_priority") or None)
    return CategoryEdit(name=name, description=form.get("description", "").strip(),
                        keywords=_words(form.get("keywords", "")), examples=_lines(form.get("examples", "")),
                        priority=form.get("priority") or "normal", mode=form.get("mode") or "live", routes=routes)


def init_admin(app: Flask, services: Services) -> None:
    """Add /admin to the app."""
    settings = services.settings
    given = settings.deskroute_admin_password.get_secret_value()
    off = password_problem(given)
    password = None if off else PasswordCheck(given)
    if off and given:
        log.warning("admin UI off: the password is too short")
    if not off:  # no sessions without the UI: no key to make or read at start-up
        app.config["SECRET_KEY"] = session_key(settings.deskroute_secret_key.get_secret_value(), services.store,
                                               given)
    app.config.update(
        SESSION_COOKIE_NAME="deskroute_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.deskroute_secure_cookies,
        PERMANENT_SESSION_LIFETIME=8 * 3600,
    )
    throttle = LoginThrottle(services.store, clock=services.clock)
    bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

    @bp.before_request
    def guard() -> Any:
        if off:
            return Response(off + "\n", status=503, mimetype="text/plain")
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

    bp.add_app_template_filter(json.loads, "fromjson")
    bp.add_app_template_filter(_when, "when")

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        who = request.remote_addr or "unknown"
        error = None
        if request.method == "POST":
            wait = throttle.attempt(who)  # counted before the check: parallel guesses can't all slip through
            if wait:
                log.warning("admin login throttled", extra={"client": who})
                later = f"{wait} seconds" if wait < 120 else f"{wait // 60 + 1} minutes"
                return render_template("admin/login.html", error=f"Too many attempts. Try again in {later}."), \
                    429, {"Retry-After": str(wait)}
            assert password is not None
            if password.matches(request.form.get("password", "")):
                throttle.succeeded(who)
                session.clear()
                session["admin"] = True
                session.permanent = True
                target = request.args.get("next", "")
                return redirect(target if target.startswith("/admin") else url_for("admin.overview"))
            log.info("admin login failed", extra={"client": who})
            error = "Wrong password."
        return render_template("admin/login.html", error=error), 401 if error else 200

    @bp.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("admin.login"))

    def live_groups(platform: str) -> dict[str, str] | None:
        """The helpdesk's groups (id -> name), asked at most once a minute by the whole install (the list is
        shared in the database); None if it can't be asked."""
        now = time.time()  # wall time: the rows are compared across machines
        found, cached = services.store.configs.groups(platform, fresher_than=now - 60)
        if found:
            return cached
        adapter = services.platforms.get(platform)
        groups = None
        if adapter is not None:
            try:
                groups = {g.id: g.name for g in adapter.list_groups()}
            except PlatformError as exc:
                log.warning("group list unavailable", extra={"platform": platform, "error": str(exc)})
        services.store.configs.save_groups(platform, groups, now=now)
        return groups

    @bp.get("/")
    @login_required
    def overview() -> Any:
        now = services.clock()
        day = now - now % 86400
        today = services.store.stats.overview(since=day)
        week = services.store.stats.overview(since=now - 7 * 86400)
        mix = services.store.stats.category_mix(since=now - 30 * 86400)
        days = sorted({d for d, _, _ in mix})
        series: dict[str, list[int]] = {}
        for d, category, n in mix:
            series.setdefault(category, [0] * len(days))[days.index(d)] = n
        accuracy = services.store.stats.accuracy(now=now, within_hours=services.settings.deskroute_accuracy_hours,
                                                 days=7)
        return render_template("admin/overview.html", today=today, week=week, accuracy=accuracy,
                               chart=stacked_bars(days, series), hours=services.settings.deskroute_accuracy_hours)

    @bp.get("/mappings")
    @login_required
    def mappings() -> Any:
        services.reload_config(force=True)  # one cheap query; the redirect after a save may land on another process
        groups = {platform: live_groups(platform) or {} for platform in services.mappings}
        return render_template("admin/mappings.html", taxonomy=services.taxonomy, mappings=services.mappings,
                               groups=groups, changes=services.store.configs.changes(limit=30))

    @bp.route("/mappings/<name>", methods=["GET", "POST"])
    @login_required
    def mapping(name: str) -> Any:
        services.reload_config(force=True)
        exists = name in services.taxonomy.categories
        if name != "new" and not exists:
            abort(404)
        groups = {platform: live_groups(platform) for platform in services.mappings}
        error = None
        form: dict[str, Any] = {}
        if request.method == "POST":
            form = request.form.to_dict()
            try:
                edit = _category_edit(form, name if exists else form.get("name", "").strip(), services)
                changed = save_category(services.mappings_dir, services.store, edit, author="admin",
                                        now=services.clock(),
                                        known_groups={p: g for p, g in groups.items() if g is not None})
                services.reload_config(force=True)
                log.info("mappings edited", extra={"category": edit.name, "files": ",".join(changed),
                                                   "version": services.config_version})
                return redirect(url_for("admin.mappings", saved=edit.name))
            except ConfigError as exc:
                error = str(exc)
        category = services.taxonomy.categories.get(name) if exists else None
        return render_template("admin/mapping.html", name=name if exists else "", category=category,
                               mappings=services.mappings, groups=groups, error=error, form=form,
                               priorities=PRIORITIES), 400 if error else 200

    @bp.get("/tickets")
    @login_required
    def tickets() -> Any:
        search = request.args.get("q", "").strip()
        state = request.args.get("state") or None
        rows = services.store.stats.recent_tickets(search=search, state=state, limit=200)
        return render_template("admin/tickets.html", rows=rows, q=search, state=state,
                               dead=services.store.events.recent(state="dead", limit=50))

    @bp.post("/tickets/<int:event_id>/retry")
    @login_required
    def retry(event_id: int) -> Any:
        reclassify = request.form.get("reclassify") == "1"
        if not services.store.events.requeue(event_id, now=services.clock(), reclassify=reclassify):
            abort(409, "that event isn't finished (or doesn't exist)")
        services.wake()
        log.info("event requeued from the admin UI", extra={"event_id": event_id, "reclassify": reclassify})
        return redirect(url_for("admin.tickets", q=request.args.get("q", ""), state=request.args.get("state", "")))

    @bp.get("/model")
    @login_required
    def model() -> Any:
        models = services.store.models.all()
        active = next((m for m in models if m.active), None)
        confusion = active.metrics.get("cv_confusion") if active else None
        picture = heatmap(active.labels, confusion) if active and confusion else None
        return render_template("admin/model.html", models=models, active=active, picture=picture,
                               message=request.args.get("message"))

    @bp.post("/model/retrain")
    @login_required
    def model_retrain() -> Any:
        from connector.feedback import retrain  # scikit-learn: loaded by the views that train, not by every worker

        report = retrain(services.store, services.taxonomy, services.settings, now=services.clock())
        verb = "promoted" if report.promoted else "not promoted"
        return redirect(url_for("admin.model", message=f"Retrain: {verb} ({report.reason})."))

    @bp.post("/model/<int:version>/activate")
    @login_required
    def model_activate(version: int) -> Any:
        from connector.feedback import LabelMismatch, promote  # scikit-learn, as above

        try:
            promote(services.store, services.taxonomy, version)
        except (KeyError, LabelMismatch) as exc:
            abort(400, str(exc))
        return redirect(url_for("admin.model", message=f"Model v{version} is active."))

    @bp.post("/model/rollback")
    @login_required
    def model_rollback() -> Any:
        from connector.feedback import rollback  # scikit-learn, as above

        try:
            version = rollback(services.store, services.taxonomy)
        except LookupError as exc:
            abort(400, str(exc))
        return redirect(url_for("admin.model", message=f"Rolled back to model v{version}."))

    @bp.get("/corrections")
    @login_required
    def corrections() -> Any:
        status = request.args.get("status") or "pending"
        if status not in (*STATUSES, "all"):
            abort(400, "unknown status")
        from connector.apps_api import ticket_url

        rows = services.store.corrections.find(status=None if status == "all" else status, limit=500)
        for row in rows:  # context for the reviewer: where the ticket is, what it said, and the choice to make
            row["url"] = ticket_url(services.settings, row["platform"], row["ticket_id"])
            row["subject"] = (row["text"] or "").split("\n", 1)[0][:90]
            final = row["final_category"] or ""
            row["choices"] = final.split(":", 1)[1].split("|") if final.startswith("ambiguous:") else []
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
        if not services.store.corrections.review(correction_id, status=status, reviewer="admin",
                                                now=services.clock(), label=label):
            abort(404)
        return redirect(url_for("admin.corrections", status=request.args.get("status", "pending")))

    @bp.get("/corrections.csv")
    @login_required
    def corrections_csv() -> Response:
        status = request.args.get("status") or None
        if status is not None and status not in STATUSES:
            abort(400, "unknown status")
        rows = services.store.corrections.find(since=_timestamp(request.args.get("since"), "since"),
                                          until=_timestamp(request.args.get("until"), "until"),
                                          category=request.args.get("category") or None, status=status)
        return Response(to_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="deskroute-corrections.csv"'})

    connection.register(bp, services, login_required)
    app.register_blueprint(bp)
