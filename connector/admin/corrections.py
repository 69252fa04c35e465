"""/admin/corrections: team leads review agents' corrections (accept, reject, settle an ambiguous label)
and download them as CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, flash, get_flashed_messages, redirect, render_template, request, url_for

from connector.admin.auth import current_user, login_required, services
from connector.apps_api import ticket_url
from connector.corrections import STATUSES, to_csv, why_not_learnable
from connector.models import candidates

bp = Blueprint("corrections", __name__)


def _timestamp(value: str | None, name: str) -> float | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        abort(400, f"{name} must be an ISO 8601 date or time")
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


@bp.get("/corrections")
@login_required
def index() -> Any:
    app = services()
    status = request.args.get("status") or "pending"
    if status not in (*STATUSES, "all"):
        abort(400, "unknown status")
    rows = app.store.corrections.find(status=None if status == "all" else status, limit=500)
    for row in rows:  # context for the reviewer: where the ticket is, what it said, and the choice to make
        row["url"] = ticket_url(app.settings, row["platform"], row["ticket_id"])
        row["subject"] = (row["text"] or "").split("\n", 1)[0][:90]
        row["choices"] = candidates(row["final_category"])
    return render_template("admin/corrections.html", rows=rows, status=status, statuses=STATUSES,
                           categories=list(app.taxonomy.categories), message=" ".join(map(str, get_flashed_messages())))


@bp.post("/corrections/<int:correction_id>")
@login_required
def review(correction_id: int) -> Any:
    app = services()
    action = request.form.get("action")
    if action not in ("accept", "reject"):
        abort(400, "action must be accept or reject")
    label = request.form.get("label") or None
    if label is not None and label not in app.taxonomy.categories:
        abort(400, "label must be a category")
    status = "accepted" if action == "accept" else "rejected"
    row = app.store.corrections.get(correction_id)
    if row is None:
        abort(404)
    back = request.args.get("status", "pending")
    if status == "accepted" and (problem := why_not_learnable(row, label, app.taxonomy.categories)):
        flash(f"Not accepted: {problem}.")  # in the signed session: a crafted link can't put words on the page
        return redirect(url_for("admin.corrections.index", status=back))
    app.store.corrections.review(correction_id, status=status, reviewer=current_user(), now=app.clock(), label=label)
    return redirect(url_for("admin.corrections.index", status=back))


@bp.get("/corrections.csv")
@login_required
def csv() -> Response:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        abort(400, "unknown status")
    rows = services().store.corrections.find(since=_timestamp(request.args.get("since"), "since"),
                                             until=_timestamp(request.args.get("until"), "until"),
                                             category=request.args.get("category") or None, status=status)
    return Response(to_csv(rows), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="deskroute-corrections.csv"'})
