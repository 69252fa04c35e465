"""/admin/suggestions: the categories the tickets no category took suggest, as last computed (weekly, or
by `deskroute suggest`; this process never clusters, it loads no scikit-learn). "Add as category" opens
the mapping editor filled in with the suggestion."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, url_for

from connector.admin.auth import login_required, services
from connector.admin.mappings import live_groups

bp = Blueprint("suggestions", __name__, url_prefix="/suggestions")

EXAMPLES_SHOWN = 3


def add_url(run_id: int, number: int) -> str:
    """The mapping editor's new-category form, filled in from suggestion `number` of computation `run_id`.
    The link names the suggestion, the editor reads it from the store: ticket text, even redacted, stays out
    of URLs (access logs and browser history keep them)."""
    return url_for("admin.mappings.edit", name="new", suggestion=f"{run_id}/{number}")


@bp.get("")
@login_required
def index() -> Any:
    app = services()
    app.reload_config(force=True)  # a category added since is shown as added
    run = app.store.suggestions.latest(examples=EXAMPLES_SHOWN)
    clusters = run["clusters"] if run else []
    moved_to = {platform for c in clusters for (platform, _), _n in c["final_groups"]}
    names = {platform: live_groups(app, platform) or {} for platform in moved_to if platform in app.platforms}
    for number, cluster in enumerate(clusters, 1):
        cluster["final"] = [{"platform": platform, "group_id": group, "tickets": n,
                             "group_name": names.get(platform, {}).get(group)}
                            for (platform, group), n in cluster["final_groups"]]
        cluster["added"] = cluster["name"] in app.taxonomy.categories
        cluster["add_url"] = add_url(run["id"], number) if run else ""
    settings = app.settings
    return render_template("admin/suggestions.html", run=run, clusters=clusters, kept=app.store.suggestions.count(),
                           on=app.keeps_unrouted, cron=settings.deskroute_suggest_cron.strip(),
                           retention_days=settings.deskroute_retention_days, shown=EXAMPLES_SHOWN)
