"""/admin/: the day and the week at a glance, and the category mix of the last 30 days."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from connector.admin.auth import login_required, services
from connector.admin.charts import stacked_bars

bp = Blueprint("overview", __name__)


@bp.get("/")
@login_required
def index() -> Any:
    app = services()
    now = app.clock()
    day = now - now % 86400
    stats = app.store.stats
    mix = stats.category_mix(since=now - 30 * 86400)
    days = sorted({d for d, _, _ in mix})
    series: dict[str, list[int]] = {}
    for d, category, n in mix:
        series.setdefault(category, [0] * len(days))[days.index(d)] = n
    hours = app.settings.deskroute_accuracy_hours
    return render_template("admin/overview.html", today=stats.overview(since=day),
                           week=stats.overview(since=now - 7 * 86400),
                           accuracy=stats.accuracy(now=now, within_hours=hours, days=7),
                           chart=stacked_bars(days, series), hours=hours)
