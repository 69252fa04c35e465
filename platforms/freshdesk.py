# API docs: https://developers.freshdesk.com/api/ (v2: tickets, notes, conversations, groups)
# Webhook auth: none exists; our automation rules send the shared secret in X-Deskroute-Token,
#   compared in constant time.
"""Freshdesk adapter: plain `requests`, flat JSON updates, numeric priorities, tags read-merged-written."""

from __future__ import annotations

import functools
import hashlib
import hmac
import html
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import requests

from connector.apps.package import build_freshdesk
from connector.models import (
    ROUTED_TAG,
    Group,
    GroupChange,
    Ignored,
    InstallReport,
    Priority,
    RoutingDecision,
    Ticket,
    TicketEvent,
    TicketField,
)
from platforms.base import (
    AUTH_RETRY_SECONDS,
    AuthFailed,
    AuthNote,
    AuthRecord,
    BadPayload,
    NotConfigured,
    Platform,
    PlatformError,
    RetryingCaller,
    Unauthorized,
    http_error,
    load_json,
    merge_tags,
    network_error,
    optional_id,
    parse_retry_after,
    short,
    shows_decision,
    ticket_id_from,
)

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-deskroute-token"
TOKEN_HEADER_NAME = "X-Deskroute-Token"
# Freshdesk numbers its priorities: 1 Low, 2 Medium, 3 High, 4 Urgent.
PRIORITY_NUMBERS: dict[Priority, int] = {"low": 1, "normal": 2, "high": 3, "urgent": 4}
PRIORITY_NAMES: dict[int, Priority] = {n: name for name, n in PRIORITY_NUMBERS.items()}
CREATED_EVENTS = frozenset({"ticket.created", "created", "ticket_created"})
UPDATED_EVENTS = frozenset({"ticket.group_changed", "group_changed", "ticket.updated", "updated"})
# Our notes open with this, which is how a retry recognises a note an earlier attempt posted.
NOTE_PREFIX = "Deskroute "
PER_PAGE = 100
SOLVED_STATUSES = (4, 5)  # Resolved, Closed
PENDING_STATUS = 3  # an agent answered and waits for the customer
BACKFILL_MAX_WAIT = 600.0  # a history import may wait this long in total on one page's rate limit
# Warn when a minute's API budget is this close to spent (the 429s that follow are handled, but slow routing).
LOW_RATE_LIMIT = 5
AUTH_RECHECK_SECONDS = 60.0  # how often a process whose calls get in looks for another's note of a 401
# Update deliveries carry no id of their own: identical bodies within this many seconds are one delivery.
UPDATE_DEDUP_SECONDS = 60


CREATED_RULE = "Deskroute: route new tickets"
REROUTE_RULE = "Deskroute: group changed"
# Automation types in /api/v2/automations/{type}/rules.
TICKET_CREATION, TICKET_UPDATES = 1, 4
# How an account (plan, role) refuses the automations API: fall back to manual steps.
REFUSALS = (400, 403, 404)
# Custom field types Deskroute can write a tag-like value into: text, or a drop-down (one of its choices).
FIELD_KINDS: dict[str, Literal["text", "dropdown"]] = {
    "custom_text": "text", "custom_paragraph": "text", "custom_dropdown": "dropdown"}


def rule_definitions(endpoint: str, secret: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """The two automation rules install creates: name -> (automation type, rule)."""
    def webhook(event: str) -> dict[str, Any]:
        return {"field_name": "trigger_webhook", "request_type": "POST", "url": endpoint,
                "content_type": "JSON", "custom_headers": {TOKEN_HEADER_NAME: secret},
                "content": json.dumps({"ticket_id": "{{ticket.id}}", "event": event})}

    return {
        CREATED_RULE: (TICKET_CREATION, {
            "name": CREATED_RULE, "active": True, "position": 1,
            "conditions": [{"name": "condition_set_1", "match_type": "any", "properties": [
                {"resource_type": "ticket", "field_name": "status", "operator": "in", "value": [2]}]}],
            "actions": [webhook("ticket.created")],
        }),
        REROUTE_RULE: (TICKET_UPDATES, {
            "name": REROUTE_RULE, "active": True, "position": 1,
            # Changes by agents: not by automations. Our own API writes count as the key's agent's; the
            # comparison with the group Deskroute set tells them apart.
            "performer": {"type": 1},
            "events": [{"field_name": "group_id", "from": "--", "to": "--"}],
            "conditions": [{"name": "condition_set_1", "match_type": "any", "properties": [
                {"resource_type": "ticket", "field_name": "tag_names", "operator": "in", "value": [ROUTED_TAG]}]}],
            "actions": [webhook("ticket.group_changed")],
        }),
    }


def manual_steps(endpoint: str) -> list[str]:
    """What an admin types in when the automations API refuses (README: "Connect a Freshdesk account")."""
    header = f"{TOKEN_HEADER_NAME}: <FRESHDESK_WEBHOOK_SECRET>"
    return [
        f"Admin > Workflows > Automations > Ticket creation > New rule '{CREATED_RULE}': when Status is Open, "
        f"Trigger webhook POST {endpoint}, custom header {header}, JSON, advanced content "
        '{"ticket_id": "{{ticket.id}}", "event": "ticket.created"}',
        f"Admin > Workflows > Automations > Ticket updates > New rule '{REROUTE_RULE}': performed by Agent, "
        f"event Group is changed, Trigger webhook POST {endpoint}, custom header {header}, JSON, advanced content "
        '{"ticket_id": "{{ticket.id}}", "event": "ticket.group_changed"}',
    ]


def web_address(domain: str, override: str = "") -> str:
    if override:
        return override.rstrip("/")
    host = domain.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    if "." not in host:
        host = f"{host}.freshdesk.com"
    return f"https://{host}"


def _error_summary(response: requests.Response) -> str:
    """`400 Validation failed: group_id: There is no group matching the given group_id` (no request data)."""
    summary = str(response.status_code)
    try:
        payload = response.json()
    except ValueError:
        return f"{summary} {response.reason or ''}".strip()
    if isinstance(payload, dict):
        head = payload.get("description") or payload.get("message") or payload.get("code")
        if head:
            summary += f" {head}"
        errors = payload.get("errors")
        if isinstance(errors, list):
            parts = [f"{e.get('field', '?')}: {e.get('message', e.get('code', ''))}"
                     for e in errors if isinstance(e, dict)]
            if parts:
                summary += ": " + "; ".join(parts)
    return short(summary, 300)


def _choices(value: Any) -> list[str]:
    """A drop-down's choices: strings in /api/v2/ticket_fields, {"value": ...} objects in the admin API."""
    choices = [c.get("value") if isinstance(c, dict) else c for c in value] if isinstance(value, list) else []
    return [str(c) for c in choices if c not in (None, "")]


def _error_fields(response: requests.Response) -> tuple[str, ...] | None:
    """The request fields an error answer names (`{"errors": [{"field": "group_id", ...}]}`); None if it names
    none (not a validation error, or not JSON)."""
    try:
        payload = response.json()
    except ValueError:
        return None
    errors = payload.get("errors") if isinstance(payload, dict) else None
    named = [e.get("field") for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    return tuple(str(name) for name in named if name) or None


# The ticket's own fields our update sends: an error naming only these is not about the custom fields.
SENT_FIELDS = frozenset({"group_id", "priority", "tags"})


def _refused_fields(named: tuple[str, ...], fields: Mapping[str, str]) -> list[str] | None:
    """Which of our custom fields a 400's errors name, with or without the cf_ of the field's API name and
    whatever path is before it (`custom_fields.cf_x`; `custom_fields` itself: all of them). None when an
    error names a field that is neither ours nor one the update sends: then the fields may be the cause."""
    bare = {name.rsplit(".", 1)[-1].removeprefix("cf_") for name in named}
    if "custom_fields" in bare:
        return list(fields)
    ours = [name for name in fields if name.removeprefix("cf_") in bare]
    if not ours and not bare <= SENT_FIELDS:
        return None
    return ours


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _note_html(note: str) -> str:
    return "<br>".join(html.escape(line) for line in note.splitlines())


class FreshdeskPlatform(Platform):
    """Freshdesk API v2 through a requests Session, with bounded handling of 429 and 5xx."""

    name: ClassVar[str] = "freshdesk"
    # Settings this adapter needs, as environment variable names.
    required_settings: ClassVar[tuple[str, ...]] = ("FRESHDESK_DOMAIN", "FRESHDESK_API_KEY", "FRESHDESK_WEBHOOK_SECRET")
    # Services hands from_settings the database's vault: a refused API key seen by one process shows in all.
    uses_token_vault: ClassVar[bool] = True
    build_app = staticmethod(build_freshdesk)

    def __init__(self, *, domain: str, api_key: str, webhook_secret: str, base_url: str = "", timeout: float = 10.0,
                 max_wait: float = 30.0, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] | None = None, auth_record: AuthRecord | None = None):
        missing = [env for env, value in zip(self.required_settings, (domain or base_url, api_key, webhook_secret),
                                             strict=True) if not value]
        if missing:
            raise NotConfigured(self.name, missing)
        self.api = web_address(domain, base_url) + "/api/v2"
        self._api_key = api_key
        self._secret = webhook_secret.encode()
        self.timeout = timeout
        self._now = now
        self._call = RetryingCaller(max_wait=max_wait, sleep=sleep or time.sleep)
        self._local = threading.local()
        # Freshdesk's X-RateLimit-Remaining from the last answer, for /health and logs.
        self.rate_limit_remaining: int | None = None
        # Whether Freshdesk refuses the API key (a 401), shared with the install's other processes: the web
        # process seldom calls Freshdesk, but its /health shows what the worker's calls found.
        self._auth = AuthNote(auth_record, now=lambda: self._now().timestamp(), recheck_seconds=AUTH_RECHECK_SECONDS)

    @classmethod
    def from_settings(cls, settings: Any, *, vault: AuthRecord | None = None, **overrides: Any) -> FreshdeskPlatform:
        """Build from a connector Settings object; raises NotConfigured. `vault`: where auth failures are
        noted for every process (the database's)."""
        return cls(
            domain=settings.freshdesk_domain,
            api_key=settings.freshdesk_api_key.get_secret_value(),
            webhook_secret=settings.freshdesk_webhook_secret.get_secret_value(),
            base_url=settings.freshdesk_base_url,
            timeout=settings.deskroute_http_timeout,
            max_wait=settings.deskroute_rate_limit_wait_seconds,
            auth_record=vault,
            **overrides,
        )

    # --- webhooks ----------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Freshdesk can't sign requests: check the shared secret our rules put in a header."""
        token = headers.get(TOKEN_HEADER, "")
        if not token:
            raise Unauthorized("missing token header")
        if not hmac.compare_digest(token.strip().encode(), self._secret):
            raise Unauthorized("token mismatch")

    def parse(self, headers: Mapping[str, str], body: bytes) -> TicketEvent | Ignored:
        """Read the JSON body an automation rule sends, with or without Freshdesk's `freshdesk_webhook` wrapper."""
        payload = load_json(body)
        if isinstance(payload, dict) and isinstance(payload.get("freshdesk_webhook"), dict):
            payload = payload["freshdesk_webhook"]  # the "simple" content mode of the Trigger Webhook action
        if not isinstance(payload, dict):
            raise BadPayload("body must be a JSON object")
        ticket_id = ticket_id_from(payload.get("ticket_id"))
        event = payload.get("event", "ticket.created")
        if not isinstance(event, str):
            raise BadPayload("event must be a string")
        if event in CREATED_EVENTS:
            return TicketEvent(platform=self.name, kind="ticket.created", ticket_id=ticket_id,
                               dedup_key=f"ticket.created:{ticket_id}")
        if event in UPDATED_EVENTS:
            digest = hashlib.sha256(body).hexdigest()[:16]
            window = int(self._now().timestamp()) // UPDATE_DEDUP_SECONDS
            return TicketEvent(platform=self.name, kind="ticket.group_changed", ticket_id=ticket_id,
                               dedup_key=f"group_changed:{ticket_id}:{digest}:{window}",
                               group_id=optional_id(payload.get("group_id")),
                               actor_id=optional_id(payload.get("actor_id")))
        return Ignored(reason=f"event {short(event)} is not used")

    # --- API ---------------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        """One Session per thread (requests sessions aren't safe to share across threads)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = (self._api_key, "X")  # the API key is the user; the password is ignored
            session.headers.update({"Content-Type": "application/json", "Accept": "application/json",
                                    "User-Agent": "Deskroute"})
            self._local.session = session
        return session

    def _request_once(self, method: str, path: str, payload: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self.session.request(method, f"{self.api}{path}", json=payload, params=params,
                                            timeout=self.timeout)
        except requests.RequestException as exc:
            raise network_error(exc) from None
        remaining = response.headers.get("X-RateLimit-Remaining")
        if remaining is not None and remaining.isdigit():
            self.rate_limit_remaining = int(remaining)
            if self.rate_limit_remaining <= LOW_RATE_LIMIT:
                log.warning("Freshdesk rate limit nearly spent for this minute",
                            extra={"remaining": self.rate_limit_remaining})
        refused = self._note_auth(response)
        if refused is not None:  # not the usual backoff: ten attempts would be spent before anyone fixed the key
            raise AuthFailed(f"freshdesk auth: {refused}", retry_after=max(
                parse_retry_after(response.headers.get("Retry-After")) or 0.0, AUTH_RETRY_SECONDS))
        if not 200 <= response.status_code < 300:
            raise http_error(response.status_code, _error_summary(response),
                             retry_after=parse_retry_after(response.headers.get("Retry-After")),
                             refused_fields=_error_fields(response) if response.status_code == 400 else None)
        return response.json() if response.content else None

    def _note_auth(self, response: requests.Response) -> str | None:
        """Share whether Freshdesk lets us in (platforms/base.py AuthNote); a 5xx says nothing about it. The
        refusal's message (no secret in it), or None."""
        if response.status_code == 401:
            message = (f"Freshdesk refused the API key ({_error_summary(response)}): check FRESHDESK_API_KEY, the key "
                       "of an active agent (it changes when the agent resets it)")
            if self._auth.refused(message):
                log.error("freshdesk refused our API key", extra={"status": response.status_code})
            return message
        if response.status_code < 500:
            self._auth.got_in()
        return None

    def _request(self, what: str, method: str, path: str, payload: Any = None, *, ticket_id: str | None = None,
                 params: dict[str, Any] | None = None) -> Any:
        ids: dict[str, Any] = {"ticket_id": ticket_id} if ticket_id else {}
        return self._call(what, lambda: self._request_once(method, path, payload, params), **ids)

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        """GET /api/v2/tickets/{id}."""
        data = self._request("fetch_ticket", "GET", f"/tickets/{int(ticket_id)}", ticket_id=ticket_id)
        return self._ticket(data)

    def _ticket(self, data: dict[str, Any]) -> Ticket:
        return Ticket(platform=self.name, id=str(data["id"]), subject=data.get("subject") or "",
                      description=data.get("description_text") or "", tags=list(data.get("tags") or []),
                      group_id=optional_id(data.get("group_id")),
                      priority=PRIORITY_NAMES.get(data.get("priority") or 0),
                      status=str(data.get("status")) if data.get("status") is not None else None,
                      updated_at=data.get("updated_at"), solved=data.get("status") in SOLVED_STATUSES,
                      taken_up=(data.get("status") in (PENDING_STATUS, *SOLVED_STATUSES)
                                or data.get("responder_id") is not None),
                      created_at=data.get("created_at"))

    def apply(self, ticket: Ticket, decision: RoutingDecision, *,
              checkpoint: Callable[[], None] = lambda: None) -> None:
        """PUT group, numeric priority and the union of tags (Freshdesk replaces tags), then a private note.

        Freshdesk has no conditional update, so a request that got no answer is never simply sent
        again: the ticket is read first, and what already landed is not repeated (a repeated PUT
        could undo an agent's change made in between).
        """
        tid = int(ticket.id)
        if shows_decision(ticket, decision):
            if self._our_note_exists(ticket.id, decision.note):
                return  # an earlier attempt wrote both
        else:
            update: dict[str, Any] = {"group_id": int(decision.group_id),
                                      "priority": PRIORITY_NUMBERS[decision.priority],
                                      "tags": merge_tags(ticket.tags, decision.tags)}
            if decision.fields:
                update["custom_fields"] = dict(decision.fields)  # only these change; others keep their values
            put = self._unless_landed(lambda: self._request_once("PUT", f"/tickets/{tid}", update),
                                      lambda: shows_decision(self.fetch_ticket(ticket.id), decision))
            try:
                self._call("apply", put, ticket_id=ticket.id, checkpoint=checkpoint)
            except PlatformError as exc:
                if exc.status != 400 or not decision.fields or exc.refused_fields is None:
                    raise  # Freshdesk didn't say which fields it refused: the fields may be why
                refused = _refused_fields(exc.refused_fields, decision.fields)
                if not refused:  # [] something else (a deleted group, say); None a field we can't place
                    raise PlatformError(str(exc), retryable=False, status=exc.status, refused_fields=(
                        None if refused is None else ())) from None
                raise PlatformError(f"freshdesk refused ticket field {', '.join(refused)} ({exc}): check fields: in "
                                    "freshdesk.yaml; `deskroute doctor` compares it with Freshdesk's ticket fields",
                                    retryable=False, status=exc.status, refused_fields=tuple(refused)) from None
        note = {"body": _note_html(decision.note), "private": True}
        post = self._unless_landed(lambda: self._request_once("POST", f"/tickets/{tid}/notes", note),
                                   lambda: self._our_note_exists(ticket.id, decision.note))
        try:
            self._call("note", post, ticket_id=ticket.id, checkpoint=checkpoint)  # the PUT's retries took time
        except PlatformError as exc:
            if exc.retryable:
                raise
            # The routing is written; only its note was refused. Not a refused routing: no triage fallback.
            raise PlatformError(f"note refused ({exc})", retryable=False) from None

    @staticmethod
    def _unless_landed(send: Callable[[], Any], landed: Callable[[], bool]) -> Callable[[], Any]:
        """`send`, except that after a failure without an answer it first checks whether it landed."""

        def once() -> Any:
            try:
                return send()
            except PlatformError as exc:
                if exc.status is None and landed():
                    return None
                raise

        return once

    def _our_note_exists(self, ticket_id: str, note: str) -> bool:
        """Whether this decision's note is on the ticket (its first line names the decision)."""
        first_line = note.splitlines()[0] if note else NOTE_PREFIX
        conversations = self._request("conversations", "GET", f"/tickets/{int(ticket_id)}/conversations",
                                      ticket_id=ticket_id, params={"per_page": PER_PAGE})
        return any(c.get("private") and (c.get("body_text") or "").startswith(first_line)
                   for c in conversations or [] if isinstance(c, dict))

    def solved_tickets(self, since: datetime) -> Iterator[Ticket]:
        """GET /api/v2/tickets?updated_since=..., oldest first, page by page (descriptions included)."""
        patient = RetryingCaller(max_wait=BACKFILL_MAX_WAIT, sleep=self._call.sleep)
        params = {"updated_since": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "per_page": PER_PAGE,
                  "include": "description", "order_by": "updated_at", "order_type": "asc"}
        page = 1
        while True:
            query = {**params, "page": page}
            batch = patient("export", functools.partial(self._request_once, "GET", "/tickets", params=query))
            for data in batch or []:
                yield self._ticket(data)
            if not batch or len(batch) < PER_PAGE:
                return
            page += 1

    def group_changes(self, ticket_id: str) -> list[GroupChange]:
        """Freshdesk's API has no change history: the ticket's current group, for the caller to compare."""
        ticket = self.fetch_ticket(ticket_id)
        return [GroupChange(change_id=f"state:{ticket.updated_at}:{ticket.group_id}", group_id=ticket.group_id,
                            at=_parse_time(ticket.updated_at), source="agent", via="current state", snapshot=True)]

    def install(self, public_url: str, *, dry_run: bool = False) -> InstallReport:
        """Create (once) the two automation rules; where the API refuses, report the manual steps."""
        report = InstallReport(platform=self.name)
        endpoint = public_url.rstrip("/") + "/webhooks/freshdesk"
        for name, (kind, rule) in rule_definitions(endpoint, self._secret.decode()).items():
            path = f"/automations/{kind}/rules"
            try:
                existing = [r for r in self._request("rules", "GET", path) or [] if r.get("name") == name]
                if existing:
                    report.add("exists", f"rule {name}", f"id {existing[0].get('id')}")
                    continue
                shown = json.dumps({**rule, "actions": [{**a, "custom_headers": {TOKEN_HEADER_NAME: "***"}}
                                                       for a in rule["actions"]]})
                report.add("plan" if dry_run else "create", f"rule {name}", f"POST /api/v2{path} {shown}")
                if not dry_run:
                    self._request("rule", "POST", path, rule)
            except PlatformError as exc:
                if exc.status not in REFUSALS:
                    raise  # down, rate limited, or bad credentials: not something to do by hand instead
                step = manual_steps(endpoint)[0 if kind == TICKET_CREATION else 1]
                report.add("manual", f"rule {name}", f"the automations API refused ({exc}); by hand: {step}")
        return report

    def uninstall(self, *, dry_run: bool = False) -> InstallReport:
        """Remove the automation rules install created."""
        report = InstallReport(platform=self.name)
        for kind in (TICKET_CREATION, TICKET_UPDATES):
            for rule in self._request("rules", "GET", f"/automations/{kind}/rules") or []:
                if rule.get("name") in (CREATED_RULE, REROUTE_RULE):
                    path = f"/automations/{kind}/rules/{rule['id']}"
                    report.add("plan" if dry_run else "delete", f"rule {rule['name']}", f"DELETE /api/v2{path}")
                    if not dry_run:
                        self._request("rule", "DELETE", path)
        return report

    def auth_status(self) -> dict[str, Any]:
        """How Deskroute signs in to Freshdesk (an agent's API key) and whether the last call got in."""
        error = self._auth.error()
        return {"auth": "api_key", "status": "auth_failing" if error else "ok", **({"error": error} if error else {})}

    def installation_problems(self) -> list[str]:
        """What's missing from install's setup (for `deskroute doctor`)."""
        problems = []
        for kind, name in ((TICKET_CREATION, CREATED_RULE), (TICKET_UPDATES, REROUTE_RULE)):
            try:
                rules = self._request("rules", "GET", f"/automations/{kind}/rules") or []
            except PlatformError as exc:
                if exc.status not in REFUSALS:
                    raise
                return [f"can't read automation rules ({exc}); check by hand that '{CREATED_RULE}' and "
                        f"'{REROUTE_RULE}' exist (README: Connect a Freshdesk account)"]
            if not any(r.get("name") == name and r.get("active", True) for r in rules):
                problems.append(f"automation rule '{name}' is missing or inactive: run `deskroute install freshdesk`")
        return problems

    def list_fields(self) -> list[TicketField]:
        """GET /api/v2/ticket_fields: default and custom fields; a custom field is written by its name (cf_...)."""
        fields = self._request("list_fields", "GET", "/ticket_fields") or []
        return [TicketField(id=str(f.get("name") or f.get("id")), title=f.get("label") or f.get("name") or "",
                            type=str(f.get("type") or ""), kind=FIELD_KINDS.get(str(f.get("type")), "other"),
                            options=_choices(f.get("choices")) if f.get("type") == "custom_dropdown" else [])
                for f in fields if isinstance(f, dict)]

    def list_groups(self) -> list[Group]:
        """GET /api/v2/groups, every page."""
        groups: list[Group] = []
        page = 1
        while True:
            batch = self._request("list_groups", "GET", "/groups", params={"page": page, "per_page": PER_PAGE})
            groups += [Group(id=str(g["id"]), name=g.get("name") or "") for g in batch or []]
            if not batch or len(batch) < PER_PAGE:
                return groups
            page += 1

