"""/admin/mappings: where each category goes in each helpdesk, and the form that edits one category.

A save stores a new version of the whole configuration (connector/config.py); every process picks it
up before its next ticket.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from flask import Blueprint, abort, redirect, render_template, request, url_for

from connector.admin.auth import current_user, login_required, once_a_minute, services
from connector.config import CategoryEdit, ConfigError, RouteEdit, save_category, save_helpdesk
from connector.mappings import TicketFields, field_problem
from connector.models import PRIORITIES, TicketField
from platforms.base import PlatformError

if TYPE_CHECKING:
    from connector.services import Services

log = logging.getLogger(__name__)
bp = Blueprint("mappings", __name__, url_prefix="/mappings")

EXAMPLES_OFFERED = 10  # example tickets a suggested category starts with (the local model learns from them)
EXAMPLE_CHARS = 300
_SUGGESTION = re.compile(r"([0-9]{1,15})/([0-9]{1,6})")  # the Suggestions page's "run/number" (a run id fits a BIGINT)
GONE = ("That suggestion is no longer stored (a newer computation or the retention period replaced it): "
        "open the Suggestions page again and follow its link.")


def live_groups(app: Services, platform: str) -> dict[str, str] | None:
    """The helpdesk's groups (id -> name), asked at most once a minute by the whole install (the list is
    shared in the database); None if it can't be asked."""
    now = app.store.db.wall()  # real time: the rows are compared across machines
    found, cached = app.store.configs.groups(platform, fresher_than=now - 60)
    if found:
        return cached
    adapter = app.platforms.get(platform)
    groups = None
    if adapter is not None:
        try:
            groups = {g.id: g.name for g in adapter.list_groups()}
        except PlatformError as exc:
            log.warning("group list unavailable", extra={"platform": platform, "error": str(exc)})
    app.store.configs.save_groups(platform, groups, now=now)
    return groups


def _words(value: str) -> list[str]:
    return [word.strip() for word in value.split(",") if word.strip()]


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def category_edit(form: dict[str, str], name: str, platforms: list[str]) -> CategoryEdit:
    """The mapping form as a CategoryEdit; ConfigError for what the files' validation can't say well."""
    if not name:
        raise ConfigError("a new category needs a name")
    routes = {}
    for platform in platforms:
        group_id = form.get(f"{platform}_group_id", "").strip()
        if not group_id:
            raise ConfigError(f"{platform}: choose a group")
        routes[platform] = RouteEdit(group_id=group_id, tags=_words(form.get(f"{platform}_tags", "")),
                                     priority=form.get(f"{platform}_priority") or None)
    return CategoryEdit(name=name, description=form.get("description", "").strip(),
                        keywords=_words(form.get("keywords", "")), examples=_lines(form.get("examples", "")),
                        priority=form.get("priority") or "normal", mode=form.get("mode") or "live", routes=routes)


def check_keywords(app: Services, change: CategoryEdit, exists: bool) -> None:
    """Refuse (until the admin confirms) a new keyword that other categories' example tickets contain: a keyword
    decides a ticket alone, so a generic one ("help") would take their tickets."""
    from connector.classify.rules import keyword_clashes

    known = set(app.taxonomy.categories[change.name].keywords) if exists else set()
    clashes = keyword_clashes(app.taxonomy, change.name, [k for k in change.keywords if k not in known])
    if clashes:
        found = "; ".join(f"'{keyword}' is in example tickets of {', '.join(others)}"
                          for keyword, others in clashes.items())
        raise KeywordClash(f"{found}. A keyword decides a ticket alone, so tickets like those would come to "
                           f"{change.name}: remove it, or tick the box below to save anyway.")


class KeywordClash(ConfigError):
    """A new keyword other categories' examples contain; saved only once the admin confirms."""


@bp.get("")
@login_required
def index() -> Any:
    app = services()
    app.reload_config(force=True)  # one cheap query; the redirect after a save may land on another process
    groups = {platform: live_groups(app, platform) or {} for platform in app.mappings}
    return render_template("admin/mappings.html", taxonomy=app.taxonomy, mappings=app.mappings,
                           groups=groups, changes=app.store.configs.changes(limit=30))


@bp.route("/<name>", methods=["GET", "POST"])
@login_required
def edit(name: str) -> Any:
    app = services()
    app.reload_config(force=True)
    exists = name in app.taxonomy.categories
    if name != "new" and not exists:
        abort(404)
    groups = {platform: live_groups(app, platform) for platform in app.mappings}
    error = None
    clash = False  # the error is a keyword clash: the form offers to save anyway
    form: dict[str, Any] = {}
    suggested = False
    gone: str | None = None  # why a suggestion's link filled nothing in
    if request.method == "POST":
        form = request.form.to_dict()
        for platform, mapping in app.mappings.items():
            if platform not in app.platforms and not form.get(f"{platform}_group_id", "").strip():
                # Not connected (a Freshdesk-only install still has zendesk.yaml): every category needs a route
                # there, so it keeps the one it has, or a new one goes to that helpdesk's triage group.
                route = mapping.categories.get(name)
                form[f"{platform}_group_id"] = route.group_id if route else mapping.triage.group_id
        try:
            change = category_edit(form, name if exists else form.get("name", "").strip(), list(app.mappings))
            if not form.get("keywords_checked"):
                check_keywords(app, change, exists)
            changed = save_category(app.mappings_dir, app.store, change, author=current_user(), now=app.clock(),
                                    known_groups={p: g for p, g in groups.items() if g is not None})
            app.reload_config(force=True)
            log.info("mappings edited", extra={"category": change.name, "files": ",".join(changed),
                                               "version": app.config_version})
            return redirect(url_for("admin.mappings.index", saved=change.name))
        except ConfigError as exc:
            error = str(exc)
            clash = isinstance(exc, KeywordClash)
    elif not exists and "suggestion" in request.args:  # "Add as category" on the Suggestions page
        form = from_suggestion(app, request.args["suggestion"]) or {}
        suggested, gone = bool(form), None if form else GONE
    category = app.taxonomy.categories.get(name) if exists else None
    return render_template("admin/mapping.html", name=name if exists else "", category=category,
                           mappings=app.mappings, connected=set(app.platforms), groups=groups, error=error, form=form,
                           clash=clash, priorities=PRIORITIES, suggested=suggested, gone=gone), \
        400 if error else 200


FIELD_KEYS = {"category": "the category (deskroute_billing, ..., or deskroute_needs_triage)",
              "confidence_band": "how sure (deskroute_conf_high, _medium or _low)",
              "tier": "which tier decided (deskroute_tier_rules, _local, _llm or _triage)"}
assert set(FIELD_KEYS) == set(TicketFields.model_fields)


@bp.route("/helpdesk/<platform>", methods=["GET", "POST"])
@login_required
def helpdesk(platform: str) -> Any:
    """One helpdesk's triage route and the ticket fields that get the decision too."""
    app = services()
    app.reload_config(force=True)
    mapping = app.mappings.get(platform)
    if mapping is None:
        abort(404)
    groups = live_groups(app, platform)
    fields = live_fields(app, platform)
    error = None
    form: dict[str, Any] = {}
    if request.method == "POST":
        form = request.form.to_dict()
        chosen = {key: form.get(f"field_{key}", "").strip() or None for key in FIELD_KEYS}
        try:
            group_id = form.get("triage_group_id", "").strip()
            if not group_id:
                raise ConfigError(f"{platform}: choose the triage group")
            # What doctor would flag, refused here: a field that can't take the values would make every write
            # lose it (Zendesk drops it, Freshdesk refuses the write and it is sent again without fields).
            problems = [f"fields.{key} {field_id} {problem}" for key, field_id in chosen.items()
                        if field_id and fields is not None
                        and (problem := field_problem(platform, key, field_id, fields, app.taxonomy))]
            if problems:
                raise ConfigError(f"{platform}: " + "; ".join(problems))
            changed = save_helpdesk(app.mappings_dir, app.store, platform,
                                    RouteEdit(group_id=group_id, tags=_words(form.get("triage_tags", ""))), chosen,
                                    author=current_user(), now=app.clock(), known_groups=groups)
            app.reload_config(force=True)
            log.info("mappings edited", extra={"platform": platform, "files": ",".join(changed),
                                               "version": app.config_version})
            return redirect(url_for("admin.mappings.index", saved=f"{platform}'s triage and fields"))
        except ConfigError as exc:
            error = str(exc)
    usable = [f for f in (fields or {}).values() if f.active and f.kind != "other"]
    return render_template("admin/helpdesk.html", platform=platform, mapping=mapping, groups=groups,
                           fields=fields, usable=usable, keys=FIELD_KEYS, form=form, error=error), \
        400 if error else 200


def live_fields(app: Services, platform: str) -> dict[str, TicketField] | None:
    """The helpdesk's ticket fields by id, or None if it can't be asked (the form then takes ids unchecked).
    Asked at most once a minute by this process: reloading the page must not spend the helpdesk's API rate."""
    adapter = app.platforms.get(platform)
    if adapter is None:
        return None

    def ask() -> dict[str, TicketField] | None:
        try:
            return {f.id: f for f in adapter.list_fields()}
        except PlatformError as exc:
            log.warning("ticket field list unavailable", extra={"platform": platform, "error": str(exc)})
            return None

    return once_a_minute(f"fields:{platform}", platform, ask)  # type: ignore[no-any-return]


def from_suggestion(app: Services, reference: str) -> dict[str, str] | None:
    """The new-category form filled in from a stored suggestion, "run/number": name, description, keywords,
    examples, shadow mode, and in each helpdesk the group agents moved most of its tickets to. None if
    there is no such suggestion (any more)."""
    match = _SUGGESTION.fullmatch(reference)
    cluster = app.store.suggestions.cluster(int(match[1]), int(match[2]), examples=EXAMPLES_OFFERED) \
        if match else None
    if cluster is None:
        return None
    form = {"name": cluster["name"], "description": cluster["description"],
            "keywords": ", ".join(cluster["keywords"]),
            "examples": "\n".join(_one_line(text) for text in cluster["examples"])}
    for platform in app.mappings:
        best = [(n, group) for (p, group), n in cluster["final_groups"] if p == platform]
        if best:
            form[f"{platform}_group_id"] = max(best)[1]
    # A new category starts in shadow mode: its keywords and description came from customers' tickets, so it
    # is recorded before it routes anything.
    form["mode"] = "shadow"
    return form


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= EXAMPLE_CHARS else line[:EXAMPLE_CHARS - 1].rstrip() + "…"
