"""/admin/tickets: recent tickets and dead events, and "retry" for a finished event."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for

from connector.admin.auth import login_required, services

log = logging.getLogger(__name__)
bp = Blueprint("tickets", __name__, url_prefix="/tickets")


@bp.get("")
@login_required
def index() -> Any:
    store = services().store
    search = request.args.get("q", "").strip()
    state = request.args.get("state") or None
    return render_template("admin/tickets.html", rows=store.stats.recent_tickets(search=search, state=state, limit=200),
                           q=search, state=state, dead=store.events.recent(state="dead", limit=50))


@bp.post("/<int:event_id>/retry")
@login_required
def retry(event_id: int) -> Any:
    app = services()
    reclassify = request.form.get("reclassify") == "1"
    if not app.store.events.requeue(event_id, now=app.clock(), reclassify=reclassify):
        abort(409, "that event isn't finished (or doesn't exist)")
    app.wake()
    log.info("event requeued from the admin UI", extra={"event_id": event_id, "reclassify": reclassify})
    return redirect(url_for("admin.tickets.index", q=request.args.get("q", ""), state=request.args.get("state", "")))
