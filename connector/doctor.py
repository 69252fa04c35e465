"""`deskroute doctor`: settings, helpdesks, mappings against live groups and ticket fields, installation,
queue, model.

Each finding is one line; a problem says what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from connector.crypto import MIN_SECRET_KEY_LENGTH
from connector.mappings import field_problem, fits_taxonomy, missing_groups
from connector.models import EventState, TicketField
from connector.scheduler import crontab
from platforms.base import AuthFailed, Platform, PlatformError
from platforms.zendesk import API_TOKEN_RETIRED

if TYPE_CHECKING:
    from connector.services import Services

# An event waiting longer than this means no worker is running, or it is stuck.
STALE_QUEUE_SECONDS = 300
# Groups named in a "not a group" line; past that, the line points to the Mappings page.
GROUPS_SHOWN = 20


@dataclass
class Finding:
    ok: bool
    line: str



def _partly_set(settings: Any, platform: str) -> bool:
    """Whether any of a helpdesk's settings is given: then what is missing is a mistake, not a choice."""
    values = (getattr(settings, field) for field in type(settings).model_fields if field.startswith(f"{platform}_"))
    return any(v.get_secret_value() if isinstance(v, SecretStr) else v for v in values)


def _acting_as(platform: Platform) -> str:
    try:
        me = platform.whoami()
    except PlatformError:
        return ""
    if me is None:
        return ""
    return f", acting as {me['name']} <{me['email']}> ({me['role']})"


def _where(services: Services, platform: str) -> str:
    """Where the admin changes a mapping: the stored configuration once edited, else the file."""
    if services.config_version is not None:
        return f"{platform}.yaml (configuration v{services.config_version}: /admin/mappings or `deskroute config`)"
    return str(services.mappings_dir / f"{platform}.yaml")


def _check_fields(services: Services, name: str, platform: Platform) -> list[Finding]:
    """The mapping's `fields:` against the helpdesk's ticket fields: each exists, is active, takes text, and
    a drop-down has an option for every value Deskroute may write into it."""
    configured = services.mappings[name].fields.configured()
    if not configured:
        return []
    where = _where(services, name)
    try:
        fields: dict[str, TicketField] = {f.id: f for f in platform.list_fields()}
    except PlatformError as exc:
        return [Finding(False, f"{name}: can't list the ticket fields ({exc}) to check {where} fields:")]
    findings = []
    for key, field_id in configured.items():
        problem = field_problem(name, key, field_id, fields, services.taxonomy)
        if problem is None:
            findings.append(Finding(True, f"{name}: fields.{key} writes to {fields[field_id].title} ({field_id})"))
        else:
            findings.append(Finding(False, f"{name}: {where} fields.{key} {field_id} {problem}"))
    return findings


def diagnose(services: Services) -> list[Finding]:
    """Every check, in order."""
    findings: list[Finding] = []

    def ok(line: str) -> None:
        findings.append(Finding(True, line))

    def problem(line: str) -> None:
        findings.append(Finding(False, line))

    settings = services.settings
    stored = services.store.configs.latest_version()
    where = (f"configuration v{stored} stored in the database (the files in {services.mappings_dir} are ignored; "
             "`deskroute config export` writes the live ones out)" if stored is not None
             else f"mappings in {services.mappings_dir}")
    ok(f"settings: database {services.store.describe()}, {where}, {len(services.taxonomy.categories)} categories")
    for setting, line in (("DESKROUTE_RETRAIN_CRON", settings.deskroute_retrain_cron),
                          ("DESKROUTE_SUGGEST_CRON", settings.deskroute_suggest_cron)):
        try:
            if line.strip():
                crontab(line)
        except ValueError as exc:
            problem(f"settings: {setting} is not a crontab line ({exc}): its job is off until it is fixed")
    if (not settings.deskroute_admin_password.get_secret_value() and services.store.users.exist()
            and len(settings.deskroute_secret_key.get_secret_value()) < MIN_SECRET_KEY_LENGTH):
        problem("admin UI: named users sign in, but sessions are signed with a key kept in the database alone "
                "(no DESKROUTE_SECRET_KEY, no shared password): whoever reads a backup can sign in as an admin. "
                "Set DESKROUTE_SECRET_KEY (32 random characters or more) on every machine")
    if not services.platforms:
        problem("no helpdesk is configured: set the ZENDESK_* or FRESHDESK_* settings (README: \"Connect a Zendesk "
                "account\", \"Connect a Freshdesk account\")")
    for name in services.mappings:
        platform = services.platforms.get(name)
        if platform is None:
            if name in services.refused:
                problem(f"{name}: {services.refused[name]}")  # set, but refused (an API token after 30 April 2027)
            elif _partly_set(services.settings, name):
                problem(f"{name}: partly configured: set {', '.join(services.unconfigured.get(name, []))} too")
            else:
                ok(f"{name}: not configured (set {', '.join(services.unconfigured.get(name, []))} to use it)")
            continue
        if platform.webhook_problem():
            problem(f"{name}: {platform.webhook_problem()}")
        auth = platform.auth_status()
        if auth.get("auth") == "api_token":
            problem(f"{name}: uses an API token (ZENDESK_EMAIL + ZENDESK_API_TOKEN). {API_TOKEN_RETIRED}")
        try:
            groups = {g.id: g.name for g in platform.list_groups()}
        except AuthFailed as exc:
            problem(f"{name}: can't sign in: {str(exc).removeprefix(f'{name} auth: ')}")
            continue
        except PlatformError as exc:
            problem(f"{name}: can't use the API ({exc}): check the {name.upper()}_* credentials and the account")
            continue
        if str(auth.get("auth", "")).startswith("oauth"):
            ok(f"{name}: signed in with OAuth ({auth['auth'].removeprefix('oauth_').replace('_', ' ')})"
               f"{_acting_as(platform)}")
        ok(f"{name}: API reachable, {len(groups)} groups")
        for key, group_id in missing_groups(services.mappings[name], groups):
            choices = ", ".join(f"{gid} ({n})" for gid, n in list(groups.items())[:GROUPS_SHOWN])
            if len(groups) > GROUPS_SHOWN:
                choices += f" and {len(groups) - GROUPS_SHOWN} more (the admin UI's Mappings page lists them all)"
            problem(f"{name}: {_where(services, name)} {key}.group_id {group_id} is not a "
                    f"group in {name}; pick one of: {choices}")
        findings += _check_fields(services, name, platform)
        try:
            problems = platform.installation_problems()
        except PlatformError as exc:
            problems = [f"can't check the webhook setup ({exc})"]
        for line in problems:
            problem(f"{name}: {line}")
        if not problems:
            ok(f"{name}: webhook and rules installed")
    health = services.store.events.health(now=services.clock())
    counts = health.counts
    dead = counts.get(EventState.DEAD, 0)
    if dead:
        problem(f"queue: {dead} dead-lettered event(s): `deskroute tickets list --state dead` says why; once that is "
                "fixed, `deskroute tickets retry --dead` (or Retry on /admin/tickets) sends them again")
    waiting = health.oldest_waiting_seconds
    if waiting is not None and waiting > STALE_QUEUE_SECONDS and counts.get(EventState.PENDING):
        problem(f"queue: the oldest event has waited {waiting / 60:.0f} min: is `deskroute worker` (or serve) running?")
    if not dead and not (waiting and waiting > STALE_QUEUE_SECONDS):
        ok(f"queue: {sum(counts.values())} events, none dead, none stale")
    version = services.store.models.active_version()
    if version is None:
        problem("model: none trained yet: `deskroute serve` or `deskroute worker` trains one at start, or run "
                "`deskroute train`")
    elif not fits_taxonomy(services.store.models.info(version).labels, services.taxonomy):
        problem(f"model: v{version} doesn't cover taxonomy.yaml's categories: run `deskroute model retrain`")
    else:
        ok(f"model: v{version} active")
    ok("claude: on" if settings.anthropic_api_key.get_secret_value() else "claude: off (no ANTHROPIC_API_KEY)")
    return findings
