"""The contract every helpdesk adapter meets, and the retry loop they share.

An adapter takes plain headers (lower-cased names) and raw body bytes and returns models from
`connector.models`. It never sees Flask. Adding a helpdesk takes one module here, one line in
`platforms.PLATFORMS` and one `mappings/<name>.yaml`.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from connector.models import (
    OUR_TAG_PREFIX,
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

log = logging.getLogger(__name__)
T = TypeVar("T")


class Unauthorized(Exception):
    """The request is not from the helpdesk: bad or missing signature, token or timestamp."""


class BadPayload(ValueError):
    """The request is authentic but its body can't be used; the message says why (no body text)."""


class NotConfigured(Exception):
    """Settings needed by a platform are missing."""

    def __init__(self, platform: str, missing: list[str], *, reason: str | None = None):
        super().__init__(reason or f"{platform} is not configured: set {', '.join(missing)}")
        self.platform = platform
        self.missing = missing
        self.reason = reason


class PlatformError(Exception):
    """A helpdesk call failed.

    Args:
        retryable: the same call may succeed later (429, 5xx, network); otherwise it never will.
        status: the HTTP status, if there was a response.
        retry_after: seconds the helpdesk asked us to wait.
        conflict: the ticket changed under us (409 on a safe update); re-read it and try again.
        refused_fields: the fields of the request the helpdesk named in refusing it (after apply(): which of
            the decision's ticket fields; empty if none of them); None when the helpdesk doesn't say.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None, conflict: bool = False,
                 refused_fields: tuple[str, ...] | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.conflict = conflict
        self.refused_fields = refused_fields


class LeaseLost(Exception):
    """Another worker owns this event now (our lease ran out): stop without writing anything."""


# An event that can't sign in waits at least this long before its next attempt: an admin has something to
# fix, and ten attempts then span about 45 minutes instead of a quarter of an hour.
AUTH_RETRY_SECONDS = 300.0


class AuthFailed(PlatformError):
    """The helpdesk won't let us in (no token, a refused client): retried later, while an admin fixes it.
    The message says what to fix and never holds a secret."""

    def __init__(self, message: str, *, status: int | None = 401, retry_after: float | None = None):
        super().__init__(message, retryable=True, status=status, retry_after=retry_after)


class AuthRecord(Protocol):
    """Where an adapter notes that the helpdesk refuses its credentials, for /health, doctor and the admin UI:
    the database's token vault (connector/tokens.py), so every process of the install sees what one found."""

    def record_error(self, error: str | None) -> None:
        """Note (None: clear) why the helpdesk refuses us."""

    def error(self) -> str | None:
        """The failure noted last and not cleared since."""


class MemoryAuthRecord:
    """An AuthRecord for one process without a database (tests, one-off commands)."""

    def __init__(self) -> None:
        self._error: str | None = None

    def record_error(self, error: str | None) -> None:
        self._error = error

    def error(self) -> str | None:
        return self._error


class AuthNote:
    """Keeps an AuthRecord in step with what this process's calls find.

    A refusal is noted each time (its time shows when it was last seen). A call that got in clears the note
    when it follows a refusal, on this process's first answer, and at most once every `recheck_seconds` after
    that: another process (a one-off command run with an old key, say) may have noted a refusal that nothing
    else would clear. A note for /health never fails a helpdesk call, so the record's errors are swallowed.
    """

    def __init__(self, record: AuthRecord | None, *, now: Callable[[], float], recheck_seconds: float = 60.0):
        self.record = record if record is not None else MemoryAuthRecord()
        self._now = now
        self._recheck = recheck_seconds
        self._failing: bool | None = None  # this process's last answer as noted; None until its first one
        self._checked_at = 0.0
        self._told = False  # a refusal reported since the last call that got in (even if it couldn't be noted)

    def refused(self, message: str) -> bool:
        """Note a refusal; True when it is news to this process (worth an error in the log, once)."""
        news, self._told = not self._told, True
        self._write(message)
        return news

    def got_in(self) -> None:
        self._told = False
        if self._failing is False:
            if self._now() - self._checked_at < self._recheck:
                return
            self._checked_at = self._now()
            try:
                if self.record.error() is None:
                    return
            except Exception:  # noqa: BLE001 - see the class docstring
                return
        self._write(None)

    def error(self) -> str | None:
        return self.record.error()

    def _write(self, error: str | None) -> None:
        try:
            self.record.record_error(error)
        except Exception as exc:  # see the class docstring; the next answer tries again
            log.warning("couldn't note the helpdesk's auth status", extra={"error": type(exc).__name__})
            return
        self._failing = error is not None
        self._checked_at = self._now()


class Platform(Protocol):
    """A helpdesk we integrate with. See platforms/zendesk.py for the reference implementation.

    Adapters subclass this explicitly, so that the optional capabilities below have their defaults
    and a type checker holds each adapter to every member callers use.
    """

    name: ClassVar[str]  # "zendesk": the URL segment, mappings/<name>.yaml and the store column

    # Optional capabilities, each with its default.
    # from_settings takes `vault=`, the database's store for OAuth tokens and auth failures (Services hands it
    # over): a TokenVault (platforms/zendesk_oauth.py), which is also an AuthRecord.
    uses_token_vault: ClassVar[bool] = False
    # A sidebar app for the helpdesk: build_app(public_url, out_path) writes its package (`deskroute app`).
    build_app: ClassVar[Callable[..., Path] | None] = None
    # How many calls the helpdesk said we have left, from its last answer (/health shows it).
    rate_limit_remaining: int | None = None

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> Platform:
        """The adapter for these settings; raise NotConfigured (saying what is missing) without them."""
        ...

    # Webhooks (the web process).

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise Unauthorized unless the request really comes from this helpdesk."""
        raise NotImplementedError  # never "authentic" by default: an adapter must say how it checks

    def parse(self, headers: Mapping[str, str], body: bytes) -> TicketEvent | Ignored:
        """Turn a verified delivery into an event, or say why it needs no work. Raise BadPayload."""

    # Routing (the worker).

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        """Read the ticket's current state. Raise PlatformError."""
        ...

    def apply(self, ticket: Ticket, decision: RoutingDecision, *,
              checkpoint: Callable[[], None] = lambda: None) -> None:
        """Write group, priority, merged tags and an internal note. Raise PlatformError.

        Must be safe to repeat: `ticket` is read fresh before each attempt, and whatever an earlier
        attempt already wrote (it carries ROUTED_TAG) is not written again. `checkpoint` is called
        before each write request; it raises LeaseLost when the event is no longer ours.
        """

    def list_groups(self) -> list[Group]:
        """Every group tickets can be routed to. Raise PlatformError."""
        ...

    def list_fields(self) -> list[TicketField]:
        """Every ticket field, for `doctor` to check the mapping's `fields:` against. Raise PlatformError."""
        ...

    # Learning from agents (the scheduler).

    def solved_tickets(self, since: datetime) -> Iterator[Ticket]:
        """Every ticket updated since `since`, oldest first, through the helpdesk's export API; the
        caller keeps the solved ones. Rate limits are waited out patiently. Raise PlatformError."""
        ...

    def group_changes(self, ticket_id: str) -> list[GroupChange]:
        """The ticket's group changes after creation, oldest first, each saying who made it.

        A helpdesk without change history returns its current group as one `agent` change; the caller
        compares it with the last group it knew. Raise PlatformError.
        """
        ...

    # Setting up (`deskroute install`, `uninstall`, `doctor`, /health).

    def install(self, public_url: str, *, dry_run: bool = False) -> InstallReport:
        """Create the webhook and the rules that call it; safe to run again. Raise PlatformError."""
        ...

    def uninstall(self, *, dry_run: bool = False) -> InstallReport:
        """Remove what install created."""
        ...

    def installation_problems(self) -> list[str]:
        """What is missing from install's setup, one line each (empty when all is in place)."""
        ...

    def webhook_problem(self) -> str | None:
        """Why every webhook is refused, when a setting they need is missing (None: they can be checked)."""
        return None

    def auth_status(self) -> dict[str, Any]:
        """How we sign in and whether it works: {"auth": ..., "status": ...}, never a secret."""
        ...

    def whoami(self) -> dict[str, str] | None:
        """The user Deskroute acts as ({"name", "email", "role"}), or None if the helpdesk can't say."""
        return None


# Failures worth another try: settings an admin can fix (401/403), a conflict (409), rate limits and 5xx.
RETRYABLE_STATUSES = frozenset({401, 403, 409, 429})
_DIGITS = re.compile(r"\A[0-9]{1,20}\Z")
MAX_ID = 2**63 - 1


def http_error(status: int, summary: str, *, retry_after: float | None,
               refused_fields: tuple[str, ...] | None = None) -> PlatformError:
    """The PlatformError for an HTTP failure, with the retry policy every adapter shares."""
    return PlatformError(summary, retryable=status in RETRYABLE_STATUSES or status >= 500, status=status,
                         retry_after=retry_after, conflict=status == 409, refused_fields=refused_fields)


def network_error(exc: Exception) -> PlatformError:
    """A request that got no answer: it may or may not have landed, so adapters must retry it safely."""
    return PlatformError(f"network error: {type(exc).__name__}", retryable=True)


def load_json(body: bytes) -> Any:
    """The body as JSON; raises BadPayload (never a message quoting the body)."""
    try:
        return json.loads(body)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise BadPayload("body is not valid JSON") from exc
    except RecursionError as exc:  # [[[[... nested deeper than the parser goes
        raise BadPayload("body is nested too deeply") from exc


def ticket_id_from(value: Any) -> str:
    """A ticket id from a webhook body: a positive integer, as a number or a string. Raises BadPayload."""
    if isinstance(value, bool) or value is None:
        raise BadPayload("ticket_id is missing")
    ticket_id = _canonical_id(value)
    if ticket_id is None:
        raise BadPayload("ticket_id must be a positive integer")
    return ticket_id


def optional_id(value: Any) -> str | None:
    """A group or user id from a payload (a number, a string, or {"id": ...}), or None."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        return None
    return _canonical_id(value)


def _canonical_id(value: Any) -> str | None:
    """One spelling per id ("007" and 7 are both "7"), so that deduplication can't be dodged by formatting.

    Both helpdesks use positive 64-bit ids.
    """
    text = str(value).strip()
    if not _DIGITS.match(text):
        return None
    number = int(text)
    return str(number) if 0 < number <= MAX_ID else None


def short(text: str, limit: int = 80) -> str:
    """Text cut to `limit` characters, for reasons and error summaries."""
    return text if len(text) <= limit else text[:limit] + "..."


def shows_decision(ticket: Ticket, decision: RoutingDecision) -> bool:
    """True if the ticket already carries this decision (our tag, its group, its tags): an earlier
    attempt's write landed. A different, earlier decision (say, a triage being re-routed) doesn't count."""
    return ROUTED_TAG in ticket.tags and ticket.group_id == decision.group_id and set(decision.tags) <= set(ticket.tags)


def merge_tags(existing: list[str], ours: list[str]) -> list[str]:
    """The ticket's tags plus ours, in order, without duplicates: an agent's tag is never dropped. Tags of an
    earlier decision of ours (`deskroute_needs_triage`, its tier and confidence...) go when a new one replaces
    it, so that triage views and reports don't count a re-routed ticket twice; `deskroute_routed` stays."""
    stale = {tag for tag in existing if tag.startswith(OUR_TAG_PREFIX) and tag != ROUTED_TAG} - set(ours)
    return list(dict.fromkeys([*(tag for tag in existing if tag not in stale), *ours]))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), or None if absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)


MIN_RETRY_DELAY = 0.5


class RetryingCaller:
    """Runs one helpdesk call, retrying 429s, 5xx and network errors within a bounded wait.

    A 401 or 403 is not retried here (credentials need an admin); the queue tries the event again later.
    A 429 is retried after its Retry-After only if that fits in what is left of `max_wait`;
    otherwise the PlatformError goes up with `retry_after` set, and the queue reschedules the event
    without holding a worker thread. 5xx and network errors get `server_retries` quick retries.
    """

    def __init__(self, *, max_wait: float, server_retries: int = 3, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep):
        self.max_wait = max_wait
        self.server_retries = server_retries
        self.backoff = backoff
        self.sleep = sleep

    def __call__(self, what: str, fn: Callable[[], T], *, checkpoint: Callable[[], None] | None = None,
                 **log_ids: Any) -> T:
        """Run `fn`; `checkpoint` runs before every attempt (a write checks its event is still ours)."""
        waited = 0.0
        server_failures = 0
        while True:
            if checkpoint is not None:
                checkpoint()
            try:
                return fn()
            except PlatformError as exc:
                if not exc.retryable or exc.conflict or exc.status in (401, 403) or isinstance(exc, AuthFailed):
                    raise  # credentials wait for an admin (and sign-in has its own cool-down): the queue retries
                if exc.status == 429 or exc.retry_after is not None:
                    # Never "retry at once": a Retry-After of 0 would spin without waiting or counting.
                    delay = max(exc.retry_after if exc.retry_after is not None else self.backoff, MIN_RETRY_DELAY)
                else:
                    server_failures += 1
                    if server_failures > self.server_retries:
                        raise
                    delay = self.backoff * 2 ** (server_failures - 1) * random.uniform(0.5, 1.0)
                if waited + delay > self.max_wait:
                    raise
                log.warning("helpdesk call failed, retrying", extra={
                    "call": what, "status": exc.status, "delay_s": round(delay, 2), **log_ids})
                self.sleep(delay)
                waited += delay
