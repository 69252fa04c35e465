"""/admin/suggestions: the categories the tickets no category took suggest, as last computed (weekly, or
by `deskroute suggest`; this process never clusters, it loads no scikit-learn). "Add as category" opens
the mapping editor filled in with the suggestion."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, render_template, url_for

from connector.admin.auth import login_required, services
from connector.admin.mappings import live_groups

bp = Blueprint("suggestions", __name__, url_prefix="/suggestions")

EXAMPLES_SHOWN = 3
EXAMPLES_OFFERED = 10  # example tickets the new category starts with (the local model learns from them)
EXAMPLE_CHARS = 300
MAX_LINK = 3500  # bytes: under gunicorn's 4,094-byte request line, with room for the method and host


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= EXAMPLE_CHARS else line[:EXAMPLE_CHARS - 1].rstrip() + "…"


def add_url(cluster: dict[str, Any], platforms: list[str]) -> str:
    """The mapping editor's new-category form, filled in: name, description, keywords, examples, and in each
    helpdesk the group agents moved most of these tickets to."""
    params = {"name": cluster["name"], "description": cluster["description"],
              "keywords": ", ".join(cluster["keywords"])}
    chosen: Counter[tuple[str, str]] = Counter(dict(cluster["final_groups"]))
    for platform in platforms:
        best = [(n, group) for (p, group), n in chosen.items() if p == platform]
        if best:
            params[f"{platform}_group_id"] = max(best)[1]
    # A new category starts in shadow mode: its keywords and description came from customers' tickets, so it
    # is recorded before it routes anything.
    params["mode"] = "shadow"
    # The form's field `name` is also the route's own argument: the query is built apart. Servers refuse
    # long request lines (gunicorn: 4,094 bytes), so examples are dropped until the link fits.
    examples = [_one_line(text) for text in cluster["examples"][:EXAMPLES_OFFERED]]
    base = url_for("admin.mappings.edit", name="new") + "?"
    while True:
        link = base + urlencode({**params, "examples": "\n".join(examples), "suggested": "1"})
        if len(link) <= MAX_LINK or not examples:
            return link
        examples.pop()


@bp.get("")
@login_required
def index() -> Any:
    app = services()
    app.reload_config(force=True)  # a category added since is shown as added
    run = app.store.suggestions.latest(examples=EXAMPLES_OFFERED)
    clusters = run["clusters"] if run else []
    moved_to = {platform for c in clusters for (platform, _), _n in c["final_groups"]}
    names = {platform: live_groups(app, platform) or {} for platform in moved_to if platform in app.platforms}
    for cluster in clusters:
        cluster["final"] = [{"platform": platform, "group_id": group, "tickets": n,
                             "group_name": names.get(platform, {}).get(group)}
                            for (platform, group), n in cluster["final_groups"]]
        cluster["added"] = cluster["name"] in app.taxonomy.categories
        cluster["add_url"] = add_url(cluster, list(app.mappings))
    settings = app.settings
    return render_template("admin/suggestions.html", run=run, clusters=clusters, kept=app.store.suggestions.count(),
                           on=app.keeps_unrouted, cron=settings.deskroute_suggest_cron.strip(),
                           retention_days=settings.deskroute_retention_days, shown=EXAMPLES_SHOWN)
