# API docs: https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/
# Webhook auth: base64(HMAC-SHA256(signing secret as literal bytes, timestamp + raw body)),
#   https://developer.zendesk.com/documentation/webhooks/verifying/
"""Zendesk adapter: verifies and parses webhooks, reads tickets and writes routing back with zenpy."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import requests

from connector.apps.package import build_zendesk
from connector.models import (
    PRIORITIES,
    ROUTED_TAG,
    Group,
    GroupChange,
    Ignored,
    InstallReport,
    RoutingDecision,
    Ticket,
    TicketEvent,
    TicketField,
)
from platforms.base import (
    AUTH_RETRY_SECONDS,
    AuthFailed,
    AuthNote,
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
from platforms.zendesk_oauth import (
    BearerAuth,
    MemoryVault,
    OAuthError,
    TokenProvider,
    TokenVault,
    ZendeskOAuth,
    api_root,
    rebase,
)

if TYPE_CHECKING:
    from zenpy import Zenpy

log = logging.getLogger(__name__)

# zenpy logs every request's body and every response at DEBUG: ticket text must never reach logs.
logging.getLogger("zenpy").setLevel(logging.WARNING)

SIGNATURE_HEADER = "x-zendesk-webhook-signature"
TIMESTAMP_HEADER = "x-zendesk-webhook-signature-timestamp"
INVOCATION_HEADER = "x-zendesk-webhook-invocation-id"
WEBHOOK_SECRET_SETTING = "ZENDESK_WEBHOOK_SECRET"
# A history import may wait this long in total on one page's rate limit (a worker event waits far less).
BACKFILL_MAX_WAIT = 600.0
# Event-subscription envelopes carry this prefix in "type".
EVENT_TYPE_PREFIX = "zen:event-type:"
# Names a trigger body may use in "event" (install writes the first of each).
CREATED_EVENTS = frozenset({"ticket.created", "created", "ticket_created"})
GROUP_CHANGED_EVENTS = frozenset({"ticket.group_changed", "group_changed", "ticket.group_assignment_changed"})
_EPOCH_SECONDS = re.compile(r"^[0-9]{1,12}$")
# Zendesk's API-token retirement (platform-facts §6): from this day no API token works.
API_TOKEN_SHUTOFF = date(2027, 4, 30)
API_TOKEN_RETIRED = (
    "Zendesk switches every API token off on 30 April 2027 (no account can create one since 27 October 2026): "
    "create an OAuth client and set ZENDESK_OAUTH_CLIENT_ID (with ZENDESK_OAUTH_CLIENT_SECRET for client "
    "credentials, or without it to use Connect Zendesk in the admin UI) instead of ZENDESK_EMAIL and "
    "ZENDESK_API_TOKEN (README: Connect a Zendesk account)")
# What OAuth needs at least: Connect Zendesk works with a public client, no secret (client credentials need one).
OAUTH_SETTINGS = ["ZENDESK_OAUTH_CLIENT_ID"]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature Zendesk sends for this timestamp and body (tests and benches sign with this too)."""
    # Zendesk signs timestamp+body with no separator, keyed with the secret's text, not its decoding.
    digest = hmac.digest(secret.encode(), timestamp.encode() + body, "sha256")
    return base64.b64encode(digest).decode()


def signed_headers(secret: str, body: bytes, timestamp: str | None = None) -> dict[str, str]:
    """The headers Zendesk sends with this body, stamped now unless told (the demo, tests and benches send these)."""
    timestamp = timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"Content-Type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
            "X-Zendesk-Webhook-Signature": sign(secret, timestamp, body)}


def _signed_digest(headers: Mapping[str, str], body: bytes) -> str:
    """A digest of exactly what Zendesk signs (timestamp + body): one per delivery, the same for a replay."""
    return hashlib.sha256(headers.get(TIMESTAMP_HEADER, "").strip().encode() + b"\n" + body).hexdigest()[:32]


def _parse_timestamp(value: str) -> datetime:
    """Zendesk sends ISO-8601 UTC; test tools send epoch seconds. Accept both."""
    if _EPOCH_SECONDS.match(value):
        return datetime.fromtimestamp(int(value), UTC)
    stamp = datetime.fromisoformat(value)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


class _HttpFailure(Exception):
    """Raised from the session's response hook so zenpy's own unbounded 429 loop never runs."""

    def __init__(self, response: requests.Response):
        super().__init__(response.status_code)
        self.response = response


def _raise_on_failure(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if not 200 <= response.status_code < 300:
        response.content  # noqa: B018 - read the body so the connection goes back to the pool
        raise _HttpFailure(response)


def _error_summary(response: requests.Response) -> str:
    """`422 RecordInvalid: group: Group: is invalid`; keys and messages only, never the request body."""
    summary = f"{response.status_code}"
    try:
        payload = response.json()
    except ValueError:
        return f"{summary} {response.reason or ''}".strip()
    if isinstance(payload, dict):
        if payload.get("error"):
            summary += f" {payload['error']}"
        details = payload.get("details")
        if isinstance(details, dict):
            parts = []
            for field, problems in details.items():
                for problem in problems if isinstance(problems, list) else [problems]:
                    text = problem.get("description") if isinstance(problem, dict) else problem
                    parts.append(f"{field}: {text}")
            if parts:
                summary += ": " + "; ".join(parts)
        elif payload.get("description"):
            summary += f": {payload['description']}"
    return short(summary, 300)


def _platform_error(exc: Exception) -> PlatformError:
    if isinstance(exc, _HttpFailure):
        response = exc.response
        return http_error(response.status_code, _error_summary(response),
                          retry_after=parse_retry_after(response.headers.get("Retry-After")))
    return network_error(exc)


def _auth_error(exc: OAuthError) -> AuthFailed:
    """No token: retry the event later (an admin fixes the client meanwhile), never write without one."""
    if exc.retryable:  # Zendesk's token endpoint is down or busy: the usual backoff
        return AuthFailed(f"zendesk auth: {exc}", status=None, retry_after=exc.retry_after)
    return AuthFailed(f"zendesk auth: {exc}", retry_after=max(exc.retry_after or 0.0, AUTH_RETRY_SECONDS))


class _ZendeskSession(requests.Session):
    """zenpy's session: our own auth on every request, every URL on Deskroute's Zendesk host."""

    authorized = True  # zenpy leaves a session it considers authorized alone (no auth of its own)

    def __init__(self, root: Callable[[], tuple[str, str]], zenpy_host: Callable[[], str]):
        super().__init__()
        self._root = root
        self._zenpy_host = zenpy_host
        self.hooks["response"].append(_raise_on_failure)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        root = self._root()
        response = super().request(method, rebase(str(url), root), *args, **kwargs)
        # zenpy picks the parser for an answer by finding its own idea of the host (subdomain.zendesk.com,
        # or ZENPY_FORCE_NETLOC) in the request's URL: with ZENDESK_BASE_URL elsewhere, it would find
        # none and hand back a bare Response. So the answer carries the URL zenpy built.
        # (tests/test_zendesk_oauth.py::test_base_url_serves_token_and_api_calls_without_zenpy_overrides)
        response.request.url = rebase(str(response.request.url), (root[0], self._zenpy_host()))
        return response


class ZendeskPlatform(Platform):
    """Zendesk through zenpy, with our own bounded handling of 429 and 5xx.

    Authenticates with OAuth (`tokens`: a TokenProvider) or, until 30 April 2027, an API token.
    """

    name: ClassVar[str] = "zendesk"
    uses_token_vault: ClassVar[bool] = True  # Services hands from_settings the database's token vault
    build_app = staticmethod(build_zendesk)

    def __init__(self, *, subdomain: str, webhook_secret: str, tokens: TokenProvider | None = None,
                 email: str = "", api_token: str = "", base_url: str = "", known_users: TokenVault | None = None,
                 tolerance_seconds: int = 300,
                 timeout: float = 10.0, max_wait: float = 30.0,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] | None = None, today: date | None = None):
        # No webhook secret yet is fine: `install` fetches it, and webhooks are refused until it is set.
        missing = ["ZENDESK_SUBDOMAIN"] if not subdomain else []
        if tokens is None and not (email and api_token):
            missing += OAUTH_SETTINGS
        if missing:
            raise NotConfigured(self.name, missing)
        if tokens is None and (today or now().date()) >= API_TOKEN_SHUTOFF:
            raise NotConfigured(self.name, OAUTH_SETTINGS, reason=API_TOKEN_RETIRED)
        self.subdomain = subdomain
        self.base_url = base_url
        self.tokens = tokens
        self._basic = None if tokens is not None else (f"{email}/token", api_token)
        # Every user Deskroute has acted as (an API token's agent, then OAuth's admin...): their writes are ours.
        self._known_users = known_users if known_users is not None else (tokens.vault if tokens else MemoryVault())
        self._secret = webhook_secret
        self.tolerance_seconds = tolerance_seconds
        self.timeout = timeout
        self._now = now
        self._call = RetryingCaller(max_wait=max_wait, sleep=sleep or time.sleep)
        self._local = threading.local()
        self._me: tuple[str, str] | None = None  # (whose token, the user it acts as)
        # Whether Zendesk refuses the API token, shared through the vault with the install's other processes
        # (OAuth's failures are the TokenProvider's to note).
        self._basic_auth = AuthNote(self._known_users, now=lambda: self._now().timestamp())

    @classmethod
    def from_settings(cls, settings: Any, *, vault: TokenVault | None = None, **overrides: Any) -> ZendeskPlatform:
        """Build from a connector Settings object; raises NotConfigured.

        OAuth when ZENDESK_OAUTH_CLIENT_ID is set (its tokens shared through `vault`; without one, this
        process keeps its own), else the legacy API token, with a warning until it stops working.
        """
        client_id = settings.zendesk_oauth_client_id
        api_token = settings.zendesk_api_token.get_secret_value()
        vault = vault if vault is not None else MemoryVault()
        tokens = None
        if client_id:
            client = ZendeskOAuth(subdomain=settings.zendesk_subdomain, client_id=client_id,
                                  client_secret=settings.zendesk_oauth_client_secret.get_secret_value(),
                                  base_url=settings.zendesk_base_url, timeout=settings.deskroute_http_timeout,
                                  clock=vault.now)
            tokens = TokenProvider(client, vault, clock=vault.now)
            if api_token:
                log.warning("ZENDESK_API_TOKEN is ignored: OAuth (ZENDESK_OAUTH_CLIENT_ID) is configured; remove it")
        platform = cls(
            subdomain=settings.zendesk_subdomain,
            email=settings.zendesk_email,
            api_token=api_token,
            tokens=tokens,
            known_users=vault,
            base_url=settings.zendesk_base_url,
            webhook_secret=settings.zendesk_webhook_secret.get_secret_value(),
            tolerance_seconds=settings.deskroute_webhook_tolerance_seconds,
            timeout=settings.deskroute_http_timeout,
            max_wait=settings.deskroute_rate_limit_wait_seconds,
            **overrides,
        )
        if tokens is None:
            log.warning("zendesk uses a legacy API token", extra={"advice": API_TOKEN_RETIRED})
        if not platform._secret:
            log.warning("zendesk webhooks are refused until ZENDESK_WEBHOOK_SECRET is set",
                        extra={"advice": "deskroute install zendesk --url PUBLIC_URL --env-file .env"})
        return platform

    def auth_status(self) -> dict[str, Any]:
        """How Deskroute authenticates to Zendesk and whether it works (for /health, doctor, the admin UI)."""
        if self.tokens is not None:
            return self.tokens.status()
        error = self._basic_auth.error()
        return {"auth": "api_token", "status": "auth_failing" if error else "ok", **({"error": error} if error else {}),
                "deprecated": "Zendesk switches API tokens off on 30 April 2027"}

    # --- webhooks ----------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Check the HMAC signature and that the timestamp is within the tolerance window."""
        if not self._secret:
            raise Unauthorized(f"{WEBHOOK_SECRET_SETTING} is not set")
        signature = headers.get(SIGNATURE_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        if not signature or not timestamp:
            raise Unauthorized("missing signature headers")
        expected = sign(self._secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise Unauthorized("signature mismatch")
        try:
            stamp = _parse_timestamp(timestamp.strip())
        except (ValueError, OverflowError, OSError) as exc:
            raise Unauthorized("unreadable timestamp") from exc
        skew = abs((self._now() - stamp).total_seconds())
        if skew > self.tolerance_seconds:
            raise Unauthorized("timestamp outside the allowed window")

    def parse(self, headers: Mapping[str, str], body: bytes) -> TicketEvent | Ignored:
        """Accept event-subscription envelopes and the JSON bodies of our triggers."""
        payload = load_json(body)
        if not isinstance(payload, dict):
            raise BadPayload("body must be a JSON object")
        event_type = payload.get("type")
        if isinstance(event_type, str) and event_type.startswith(EVENT_TYPE_PREFIX):
            return self._parse_envelope(payload, event_type[len(EVENT_TYPE_PREFIX):])
        return self._parse_trigger_body(payload, headers, body)

    def _parse_envelope(self, payload: dict[str, Any], event_type: str) -> TicketEvent | Ignored:
        if event_type not in ("ticket.created", "ticket.group_assignment_changed"):
            return Ignored(reason=f"event type {short(event_type)} is not used")
        detail: dict[str, Any] = payload["detail"] if isinstance(payload.get("detail"), dict) else {}
        subject = payload.get("subject")
        from_subject = subject.rsplit(":", 1)[-1] if isinstance(subject, str) else None
        ticket_id = ticket_id_from(detail.get("id", from_subject))
        envelope_id = payload.get("id") if isinstance(payload.get("id"), str) else None
        occurred_at = _optional_time(payload.get("time"))
        via = detail.get("via", {}).get("channel") if isinstance(detail.get("via"), dict) else None
        if event_type == "ticket.created":
            return TicketEvent(platform=self.name, kind="ticket.created", ticket_id=ticket_id,
                               dedup_key=f"ticket.created:{ticket_id}", source_id=envelope_id,
                               occurred_at=occurred_at, via=_optional_str(via))
        change: dict[str, Any] = payload["event"] if isinstance(payload.get("event"), dict) else {}
        return TicketEvent(
            platform=self.name, kind="ticket.group_changed", ticket_id=ticket_id,
            dedup_key=f"event:{envelope_id}" if envelope_id else f"group_changed:{ticket_id}:{payload.get('time')}",
            source_id=envelope_id, occurred_at=occurred_at,
            group_id=optional_id(change.get("current", detail.get("group_id"))),
            previous_group_id=optional_id(change.get("previous")),
            actor_id=optional_id(detail.get("actor_id")), via=_optional_str(via),
        )

    def _parse_trigger_body(self, payload: dict[str, Any], headers: Mapping[str, str],
                            body: bytes) -> TicketEvent | Ignored:
        invocation_id = headers.get(INVOCATION_HEADER)
        ticket_id = ticket_id_from(payload.get("ticket_id"))
        event = payload.get("event", "ticket.created")
        if not isinstance(event, str):
            raise BadPayload("event must be a string")
        if event in CREATED_EVENTS:
            return TicketEvent(platform=self.name, kind="ticket.created", ticket_id=ticket_id,
                               dedup_key=f"ticket.created:{ticket_id}", source_id=invocation_id)
        if event in GROUP_CHANGED_EVENTS:
            group_id = optional_id(payload.get("group_id"))
            # De-duplicated on what the signature covers: the invocation id header is not signed, so a
            # captured delivery replayed under new ids would otherwise queue a new event each time.
            return TicketEvent(
                platform=self.name, kind="ticket.group_changed", ticket_id=ticket_id,
                dedup_key=f"group_changed:{ticket_id}:{_signed_digest(headers, body)}",
                source_id=invocation_id, group_id=group_id,
                previous_group_id=optional_id(payload.get("previous_group_id")),
                actor_id=optional_id(payload.get("actor_id")), via=_optional_str(payload.get("via")),
            )
        return Ignored(reason=f"event {short(event)} is not used")

    # --- API ---------------------------------------------------------------------------------

    @property
    def client(self) -> Zenpy:
        """One zenpy client per thread: requests sessions aren't safe to share across threads."""
        client = getattr(self._local, "client", None)
        if client is None:
            session = _ZendeskSession(lambda: api_root(self.base_url, self.subdomain),
                                      lambda: os.environ.get("ZENPY_FORCE_NETLOC") or f"{self.subdomain}.zendesk.com")
            session.auth = BearerAuth(self.tokens) if self.tokens is not None else self._basic
            from zenpy import Zenpy  # imported on first use: the web process mostly never calls Zendesk

            client = Zenpy(subdomain=self.subdomain, session=session, timeout=self.timeout, disable_cache=True)
            self._local.client = client
        return client

    def _attempt(self, fn: Callable[[], Any]) -> Any:
        """One call; with OAuth, a 401 renews the token and repeats the call once (a 401 changed nothing)."""
        renewed = False
        while True:
            try:
                result = fn()
            except _HttpFailure as exc:
                status = exc.response.status_code
                if status == 401 and self.tokens is not None and not renewed:
                    renewed = True
                    sent = str(exc.response.request.headers.get("Authorization", ""))
                    try:
                        self.tokens.renew_after_401(sent.removeprefix("Bearer "))
                    except OAuthError as auth:
                        raise _auth_error(auth) from None
                    continue
                error = _platform_error(exc)
                if status == 401:
                    raise self._auth_refused(error) from None
                if self.tokens is None and status < 500 and status != 429:  # refused for another reason, but let in
                    self._basic_auth.got_in()
                raise error from None
            except requests.RequestException as exc:
                raise network_error(exc) from None
            except OAuthError as exc:  # from BearerAuth: no token to send
                raise _auth_error(exc) from None
            if self.tokens is not None:
                self.tokens.succeeded()
            else:
                self._basic_auth.got_in()
            return result

    def _auth_refused(self, error: PlatformError) -> AuthFailed:
        if self.tokens is None:
            message = f"Zendesk refused the API token ({error}). {API_TOKEN_RETIRED}"
            news = self._basic_auth.refused(message)
        else:
            message = (f"Zendesk refused a freshly renewed OAuth token ({error}): check that the user the OAuth client "
                       "acts as is still an active admin, and the client's scopes")
            self.tokens.failed(message)
            news = True
        if news:
            log.error("zendesk refused our credentials", extra={"status": error.status})
        return AuthFailed(f"zendesk auth: {message}", retry_after=max(error.retry_after or 0.0, AUTH_RETRY_SECONDS))

    def _api(self, what: str, fn: Callable[[], Any], *, checkpoint: Callable[[], None] | None = None,
             **log_ids: Any) -> Any:
        return self._call(what, lambda: self._attempt(fn), checkpoint=checkpoint, **log_ids)

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        """Read the ticket fresh (zenpy's cache is off, so a re-route is never missed)."""
        zt = self._api("fetch_ticket", lambda: self.client.tickets(id=int(ticket_id)), ticket_id=ticket_id)
        return self._ticket(zt)

    def _ticket(self, zt: Any) -> Ticket:
        priority = zt.priority if zt.priority in PRIORITIES else None
        via = getattr(zt.via, "channel", None) if zt.via is not None else None
        return Ticket(platform=self.name, id=str(zt.id), subject=zt.subject or "", description=zt.description or "",
                      tags=list(zt.tags or []), group_id=optional_id(zt.group_id), priority=priority,
                      status=zt.status, updated_at=zt.updated_at, via=via, solved=zt.status in ("solved", "closed"),
                      taken_up=zt.status in ("pending", "hold", "solved", "closed") or zt.assignee_id is not None,
                      created_at=zt.created_at)

    def apply(self, ticket: Ticket, decision: RoutingDecision, *,
              checkpoint: Callable[[], None] = lambda: None) -> None:
        """One safe PUT: group, priority, the ticket's tags plus ours, and a private note."""
        if shows_decision(ticket, decision):
            return  # an earlier attempt landed (tags and note go in one request, so all of it did)
        fields: dict[str, Any] = {}
        if ticket.updated_at:
            # 409 if anyone touched the ticket since we read it, so an agent's new tag is never lost.
            fields.update(safe_update=True, updated_stamp=ticket.updated_at)
        custom = _custom_fields(decision.fields)
        if custom:
            fields["custom_fields"] = custom
        from zenpy.lib.api_objects import Comment
        from zenpy.lib.api_objects import Ticket as ZenpyTicket

        update = ZenpyTicket(
            id=int(ticket.id),
            group_id=int(decision.group_id),
            priority=decision.priority,
            tags=merge_tags(ticket.tags, decision.tags),
            comment=Comment(body=decision.note, public=False),
            **fields,
        )
        result = self._api("apply", lambda: self.client.tickets.update(update), ticket_id=ticket.id,
                           checkpoint=checkpoint)
        if custom:
            _warn_about_dropped_fields(custom, result, ticket.id)

    def solved_tickets(self, since: datetime) -> Iterator[Ticket]:
        """The incremental export (cursor-based), page by page; a 429 midway is waited out and resumed."""
        patient = RetryingCaller(max_wait=BACKFILL_MAX_WAIT, sleep=self._call.sleep)

        def call(what: str, fn: Callable[[], Any]) -> Any:
            return patient(what, lambda: self._attempt(fn))

        pages = call("export", lambda: self.client.tickets.incremental(start_time=int(since.timestamp())))
        while True:
            # zenpy fetches the next page inside next(); a failure leaves its cursor where it was.
            zt = call("export", lambda: next(pages, None))
            if zt is None:
                return
            yield self._ticket(zt)

    def install(self, public_url: str, *, dry_run: bool = False) -> InstallReport:
        """Create (once) the Deskroute webhook, connected to triggers, and its two triggers."""
        from zenpy.lib.api_objects import Trigger, Webhook

        report = InstallReport(platform=self.name, secret_setting=WEBHOOK_SECRET_SETTING)
        endpoint = public_url.rstrip("/") + "/webhooks/zendesk"
        hooks = [h for h in self._api("webhooks", lambda: list(self.client.webhooks.list())) if h.name == WEBHOOK_NAME]
        hook = hooks[0] if hooks else None
        wanted = {"name": WEBHOOK_NAME, "endpoint": endpoint, "http_method": "POST", "request_format": "json",
                  "status": "active", "subscriptions": ["conditional_ticket_events"]}
        if hook is None:
            report.add("plan" if dry_run else "create", f"webhook {WEBHOOK_NAME}",
                       f"POST /api/v2/webhooks {json.dumps({'webhook': wanted})}")
            if not dry_run:
                hook = self._api("webhook", lambda: self.client.webhooks.create(Webhook(**wanted)))
        elif hook.endpoint != endpoint:
            report.add("plan" if dry_run else "update", f"webhook {WEBHOOK_NAME}",
                       f"PUT /api/v2/webhooks/{hook.id} endpoint {endpoint}")
            if not dry_run:
                self._api("webhook", lambda: self.client.webhooks.update(hook.id, Webhook(**wanted)))
        else:
            report.add("exists", f"webhook {WEBHOOK_NAME}", f"id {hook.id}, {endpoint}")
        webhook_id = hook.id if hook is not None else "<new webhook id>"
        if hook is not None:
            secret = self._api("secret", lambda: self.client.webhooks.show_secret(hook.id))
            report.secret = getattr(secret, "secret", None)
        triggers = {t.title: t for t in self._api("triggers", lambda: list(self.client.triggers()))}
        for title, definition in trigger_definitions(webhook_id).items():
            existing = triggers.get(title)
            if existing is not None and existing.actions == definition["actions"]:
                report.add("exists", f"trigger {title}", f"id {existing.id}")
                continue
            verb = "plan" if dry_run else ("update" if existing is not None else "create")
            call = f"PUT /api/v2/triggers/{existing.id}" if existing is not None else "POST /api/v2/triggers"
            report.add(verb, f"trigger {title}", f"{call} {json.dumps({'trigger': {'title': title, **definition}})}")
            if dry_run:
                continue
            trigger = Trigger(title=title, **definition)
            if existing is not None:
                trigger.id = existing.id
                self._api("trigger", functools.partial(self.client.triggers.update, trigger))
            else:
                self._api("trigger", functools.partial(self.client.triggers.create, trigger))
        return report

    def uninstall(self, *, dry_run: bool = False) -> InstallReport:
        """Remove what install created: the two triggers, then the webhook."""
        report = InstallReport(platform=self.name)
        for trigger in self._api("triggers", lambda: list(self.client.triggers())):
            if trigger.title in (CREATED_TRIGGER, REROUTE_TRIGGER):
                report.add("plan" if dry_run else "delete", f"trigger {trigger.title}",
                           f"DELETE /api/v2/triggers/{trigger.id}")
                if not dry_run:
                    self._api("trigger", functools.partial(self.client.triggers.delete, trigger))
        for hook in self._api("webhooks", lambda: list(self.client.webhooks.list())):
            if hook.name == WEBHOOK_NAME:
                report.add("plan" if dry_run else "delete", f"webhook {WEBHOOK_NAME}",
                           f"DELETE /api/v2/webhooks/{hook.id}")
                if not dry_run:
                    self._api("webhook", functools.partial(self.client.webhooks.delete, hook))
        return report

    def webhook_problem(self) -> str | None:
        if self._secret:
            return None
        return (f"{WEBHOOK_SECRET_SETTING} is not set, so every webhook is refused: `deskroute install zendesk --url "
                "PUBLIC_URL --env-file .env` stores it (or copy it from the webhook's Reveal secret), then restart")

    def installation_problems(self) -> list[str]:
        """What's missing from install's setup (for `deskroute doctor`)."""
        problems = []
        hooks = [h for h in self._api("webhooks", lambda: list(self.client.webhooks.list())) if h.name == WEBHOOK_NAME]
        if not hooks:
            problems.append(f"no webhook named {WEBHOOK_NAME}: run `deskroute install zendesk --url PUBLIC_URL`")
        elif hooks[0].status != "active":
            problems.append(f"the {WEBHOOK_NAME} webhook is {hooks[0].status}: activate it in Admin Center")
        if hooks and set(getattr(hooks[0], "subscriptions", None) or []) >= SUBSCRIBED_EVENTS:
            return problems  # set up by hand with event subscriptions (README step 4): no triggers needed
        titles = {t.title for t in self._api("triggers", lambda: list(self.client.triggers())) if t.active}
        for title in (CREATED_TRIGGER, REROUTE_TRIGGER):
            if title not in titles:
                problems.append(f"trigger '{title}' is missing or inactive: run `deskroute install zendesk`")
        return problems

    def list_groups(self) -> list[Group]:
        """Every group in the account."""
        groups = self._api("list_groups", lambda: list(self.client.groups()))
        return [Group(id=str(g.id), name=g.name or "") for g in groups]

    def list_fields(self) -> list[TicketField]:
        """Every ticket field, system and custom (GET /api/v2/ticket_fields.json); a drop-down's options
        are their tags, which is what a write sets."""
        fields = self._api("list_fields", lambda: [f.to_dict() for f in self.client.ticket_fields()])
        return [TicketField(id=str(f.get("id")), title=f.get("title") or "", type=str(f.get("type") or ""),
                            kind=FIELD_KINDS.get(str(f.get("type")), "other"), active=f.get("active") is not False,
                            options=[str(o.get("value")) for o in f.get("custom_field_options") or []
                                     if isinstance(o, dict) and o.get("value")])
                for f in fields]

    def whoami(self) -> dict[str, str]:
        """The Zendesk user Deskroute acts as (GET /api/v2/users/me with our token)."""
        me = self._api("me", lambda: self.client.users.me())
        return {"id": str(me.id or ""), "name": me.name or "", "email": me.email or "", "role": me.role or ""}

    def _own_user_ids(self) -> set[str]:
        """Every user Deskroute has acted as: the current one (asked again whenever the connection
        changes) and those before it, so that writes made before a switch still count as ours."""
        whose = self.tokens.identity() if self.tokens is not None else "api_token"
        if self._me is None or self._me[0] != whose:
            me = optional_id(self.whoami()["id"]) or ""
            if me:
                self._known_users.remember_user(me)
            self._me = (whose, me)
        return {self._me[1], *self._known_users.users()} - {""}

    def group_changes(self, ticket_id: str) -> list[GroupChange]:
        """Group changes from the ticket's audits, each told apart by who made it (platform-facts §2).

        A trigger's change carries its own `via` (channel "rule") inside the audit of the update that
        fired it; our own writes come through the API as our user, from zenpy.
        """
        audits = self._api("audits", lambda: [a.to_dict() for a in self.client.tickets.audits(ticket=int(ticket_id))],
                           ticket_id=ticket_id)
        mine = self._own_user_ids()
        changes = []
        for audit in audits:
            audit_via = audit.get("via") or {}
            author = optional_id(audit.get("author_id"))
            client = str(((audit.get("metadata") or {}).get("system") or {}).get("client") or "")
            for event in audit.get("events") or []:
                if event.get("field_name") != "group_id" or event.get("type") != "Change":
                    continue
                via = event.get("via") or audit_via
                channel = via.get("channel")
                if channel == "rule" or (via.get("source") or {}).get("rel") in ("trigger", "automation"):
                    source = "rule"
                elif channel == "api" and (author in mine if mine else client.startswith("Zenpy")):
                    source = "ours"
                else:
                    source = "agent"
                changes.append(GroupChange(
                    change_id=str(event.get("id")), group_id=optional_id(event.get("value")),
                    previous_group_id=optional_id(event.get("previous_value")),
                    at=_optional_time(audit.get("created_at")), actor_id=author, source=source, via=channel))
        return changes


# --- install -----------------------------------------------------------------------------------

WEBHOOK_NAME = "Deskroute"
# A webhook subscribed to these (set up by hand, README step 4) needs no triggers.
SUBSCRIBED_EVENTS = {"zen:event-type:ticket.created", "zen:event-type:ticket.group_assignment_changed"}
CREATED_TRIGGER = "Deskroute: route new tickets"
REROUTE_TRIGGER = "Deskroute: record re-routes"


def trigger_definitions(webhook_id: str) -> dict[str, dict[str, Any]]:
    """The two triggers install creates, by title."""
    def notify(body: dict[str, str]) -> list[dict[str, Any]]:
        return [{"field": "notification_webhook", "value": [webhook_id, json.dumps(body)]}]

    return {
        CREATED_TRIGGER: {
            "conditions": {"all": [{"field": "update_type", "operator": "is", "value": "Create"},
                                   {"field": "current_tags", "operator": "not_includes", "value": ROUTED_TAG}],
                           "any": []},
            "actions": notify({"ticket_id": "{{ticket.id}}", "event": "ticket.created"}),
        },
        REROUTE_TRIGGER: {
            # Loop guard: updates through the API (via_id 5: Deskroute's own writes) don't fire it.
            "conditions": {"all": [{"field": "update_type", "operator": "is", "value": "Change"},
                                   {"field": "group_id", "operator": "changed"},
                                   {"field": "current_tags", "operator": "includes", "value": ROUTED_TAG},
                                   {"field": "via_id", "operator": "is_not", "value": "5"}],
                           "any": []},
            "actions": notify({"ticket_id": "{{ticket.id}}", "event": "ticket.group_changed",
                               "actor_id": "{{current_user.id}}"}),
        },
    }


# Custom field types Deskroute can write a tag-like value into: text, or a drop-down ("tagger").
FIELD_KINDS: dict[str, Literal["text", "dropdown"]] = {"text": "text", "textarea": "text", "tagger": "dropdown"}


def _custom_fields(fields: Mapping[str, str]) -> list[dict[str, Any]]:
    """`custom_fields` for a ticket update. Zendesk numbers its fields; any other id can't be one of them,
    so it is left out (as Zendesk itself would ignore it) and `deskroute doctor` names it."""
    custom = []
    for field_id, value in fields.items():
        number = optional_id(field_id)
        if number is None:
            log.warning("ticket field id is not a Zendesk field number; left out", extra={"field_id": short(field_id)})
            continue
        custom.append({"id": int(number), "value": value})
    return custom


def _warn_about_dropped_fields(sent: list[dict[str, Any]], result: Any, ticket_id: str) -> None:
    """Zendesk answers 200 and silently ignores a field id it doesn't have, or a value that isn't one of a
    drop-down's options: compare what the updated ticket says with what we sent, and say so."""
    answer = getattr(result, "ticket", None)
    stored = getattr(answer, "custom_fields", None) if answer is not None else None
    if not isinstance(stored, list):
        return  # no ticket in the answer: nothing to compare with
    values = {str(f.get("id")): f.get("value") for f in stored if isinstance(f, dict)}
    dropped = [str(f["id"]) for f in sent if values.get(str(f["id"])) != f["value"]]
    if dropped:
        log.warning("zendesk ignored ticket field(s): run `deskroute doctor` to check fields: in zendesk.yaml",
                    extra={"ticket_id": ticket_id, "field_ids": ",".join(dropped)})


def _optional_str(value: Any) -> str | None:
    return short(value, 40) if isinstance(value, str) and value else None


def _optional_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        # Zendesk sends nanoseconds ("...10:12:07.672717030Z"); Python takes at most microseconds.
        value = re.sub(r"(\.\d{6})\d+", r"\1", value)
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
