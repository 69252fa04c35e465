"""A loopback Freshdesk for tests, benches and the demo.

The part of API v2 that Deskroute uses, with Freshdesk's behaviours: basic auth with the API key as
user, flat JSON bodies, `tags` in a PUT replace the ticket's tags, numeric priorities, 400
"Validation failed" for an unknown group or field, X-RateLimit-* headers on every answer and 429
with Retry-After once the per-minute budget is spent, plus injectable faults (429, 5xx, slow answers).
Custom ticket fields (`add_field`) are listed at /api/v2/ticket_fields with the default fields; a PUT's
`custom_fields` (keyed by the field's name, cf_...) changes only the fields it names, and an unknown
name or a value that isn't one of a drop-down's choices answers 400 "Validation failed".
Point Deskroute at it with FRESHDESK_BASE_URL=http://host:port.
"""

from __future__ import annotations

import base64
import html
import itertools
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from platforms.fakes.base import FakeHelpdesk, json_response

_TICKET = re.compile(r"^/api/v2/tickets/(\d+)$")
_NOTES = re.compile(r"^/api/v2/tickets/(\d+)/notes$")
_CONVERSATIONS = re.compile(r"^/api/v2/tickets/(\d+)/conversations$")
UPDATABLE = {"group_id", "priority", "tags", "status", "responder_id", "type", "custom_fields"}
# Every account has these (name, label, type); they are written as top-level attributes, not custom_fields.
DEFAULT_FIELDS = [("requester", "Search a requester", "default_requester"), ("subject", "Subject", "default_subject"),
                  ("ticket_type", "Type", "default_ticket_type"), ("source", "Source", "default_source"),
                  ("status", "Status", "default_status"), ("priority", "Priority", "default_priority"),
                  ("group", "Group", "default_group"), ("agent", "Agent", "default_agent"),
                  ("description", "Description", "default_description")]


def _invalid(field: str, message: str, code: str = "invalid_value") -> Response:
    return json_response(400, {"description": "Validation failed",
                               "errors": [{"field": field, "message": message, "code": code}]})


def _error(field: str, message: str, code: str = "invalid_value") -> dict[str, str]:
    return {"field": field, "message": message, "code": code}


class FakeFreshdesk(FakeHelpdesk):
    """In-memory Freshdesk."""

    def __init__(self, *, api_key: str = "fake-api-key", groups: dict[int, str] | None = None,
                 rate_limit_per_minute: int = 100_000, seed: int = 0, clock: Callable[[], float] = time.time):
        super().__init__(seed=seed)
        self.api_key = api_key
        self.groups = dict(groups or {})
        # Custom ticket fields by name (cf_...): {"id", "label", "type", "choices"}.
        self.fields: dict[str, dict[str, Any]] = {}
        self.tickets: dict[int, dict[str, Any]] = {}
        self.conversations: dict[int, list[dict[str, Any]]] = {}
        # Updates that took effect, per ticket, oldest first (rejected ones are only in `requests`).
        self.applied: dict[int, list[dict[str, Any]]] = {}
        self.rate_limit_per_minute = rate_limit_per_minute
        self._window_start = time.monotonic()
        self._used = 0
        self._ids = itertools.count(1)
        self.clock = clock
        self._last_stamp = 0

    # --- test-side controls ----------------------------------------------------------------------

    def add_ticket(self, ticket_id: int, *, subject: str, description: str, tags: list[str] | None = None,
                   group_id: int | None = None, priority: int = 1) -> dict[str, Any]:
        """Create a ticket as a customer would."""
        with self.lock:
            stamp = self._stamp()
            ticket = {"id": ticket_id, "subject": subject, "description": f"<div>{description}</div>",
                      "description_text": description, "tags": list(tags or []), "group_id": group_id,
                      "priority": priority, "status": 2, "source": 1, "type": None, "responder_id": None,
                      "custom_fields": {name: None for name in self.fields}, "created_at": stamp, "updated_at": stamp}
            self.tickets[ticket_id] = ticket
            self.conversations[ticket_id] = []
        return ticket

    def add_field(self, name: str, label: str, *, type: str = "custom_dropdown",
                  choices: list[str] | None = None) -> None:
        """An admin creates a custom ticket field (`name` as the API shows it, cf_...)."""
        with self.lock:
            self.fields[name] = {"id": 43000000000 + len(self.fields) + 1, "label": label, "type": type,
                                 "choices": list(choices or [])}

    def move(self, ticket_id: int, group_id: int, *, by: str = "agent") -> None:
        """An agent (or an automation) moves the ticket to another group."""
        with self.lock:
            self.tickets[ticket_id]["group_id"] = group_id
            self.tickets[ticket_id]["updated_at"] = self._stamp()

    def private_notes(self, ticket_id: int) -> list[str]:
        """Plain-text bodies of the private notes on this ticket."""
        return [c["body_text"] for c in self.conversations.get(ticket_id, []) if c["private"]]

    # --- the API ---------------------------------------------------------------------------------

    def _stamp(self) -> str:
        # Strictly increasing (a safe update must see a new stamp), and on the caller's clock.
        self._last_stamp = max(int(self.clock()), self._last_stamp + 1)
        return datetime.fromtimestamp(self._last_stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _authenticated(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        except ValueError:
            return False
        return user == self.api_key

    def _rate_limit(self) -> dict[str, str] | None:
        """Count this call against the minute's budget; None once it is spent."""
        now = time.monotonic()
        if now - self._window_start >= 60:
            self._window_start, self._used = now, 0
        if self._used >= self.rate_limit_per_minute:
            return None
        self._used += 1
        return {"X-RateLimit-Total": str(self.rate_limit_per_minute),
                "X-RateLimit-Remaining": str(self.rate_limit_per_minute - self._used),
                "X-RateLimit-Used-CurrentRequest": "1"}

    def route(self, request: Request, body: Any) -> Response:
        if not self._authenticated(request):
            return json_response(401, {"code": "invalid_credentials",
                                       "message": "You have to be logged in to perform this action."})
        limits = self._rate_limit()
        if limits is None:
            retry_after = max(1, int(60 - (time.monotonic() - self._window_start)))
            return json_response(429, {"message": "You have exceeded the limit of requests per minute"},
                                 {"Retry-After": str(retry_after)})
        response = self._dispatch(request, body)
        response.headers.update(limits)
        return response

    def _dispatch(self, request: Request, body: Any) -> Response:
        path, method = request.path, request.method
        if (match := _TICKET.match(path)) and method in ("GET", "PUT"):
            ticket = self.tickets.get(int(match.group(1)))
            if ticket is None:
                return Response(status=404)
            return json_response(200, dict(ticket)) if method == "GET" else self._update(ticket, body)
        if (match := _NOTES.match(path)) and method == "POST":
            return self._add_note(int(match.group(1)), body)
        if (match := _CONVERSATIONS.match(path)) and method == "GET":
            if int(match.group(1)) not in self.tickets:
                return Response(status=404)
            return json_response(200, list(self.conversations[int(match.group(1))]))
        if path == "/api/v2/ticket_fields" and method == "GET":
            return json_response(200, self._ticket_fields())
        if path == "/api/v2/groups" and method == "GET":
            page = int(request.args.get("page", 1))
            per_page = min(int(request.args.get("per_page", 30)), 100)
            groups = [{"id": gid, "name": name, "description": None} for gid, name in sorted(self.groups.items())]
            return json_response(200, groups[(page - 1) * per_page:page * per_page])
        return json_response(404, {"code": "not_found", "message": "The requested URL was not found"})

    def _ticket_fields(self) -> list[dict[str, Any]]:
        fields: list[dict[str, Any]] = [
            {"id": 43000000000 - n, "name": name, "label": label, "label_for_customers": label, "type": kind,
             "default": True, "position": n + 1, "required_for_closure": False}
            for n, (name, label, kind) in enumerate(DEFAULT_FIELDS)]
        for n, (name, field) in enumerate(self.fields.items()):
            shown = {"id": field["id"], "name": name, "label": field["label"], "label_for_customers": field["label"],
                     "type": field["type"], "default": False, "position": len(DEFAULT_FIELDS) + n + 1,
                     "required_for_closure": False}
            if field["type"] == "custom_dropdown":
                shown["choices"] = list(field["choices"])
            fields.append(shown)
        return fields

    def _custom_field_errors(self, values: Any) -> list[dict[str, str]]:
        if not isinstance(values, dict):
            return [_error("custom_fields", "It should be a/an key/value pair", "datatype_mismatch")]
        errors = []
        for name, value in values.items():
            field = self.fields.get(name)
            if field is None:
                errors.append(_error(name, "Unexpected/invalid field in request", "invalid_field"))
            elif value is None:
                continue
            elif not isinstance(value, str) and field["type"] in ("custom_text", "custom_paragraph",
                                                                  "custom_dropdown"):
                errors.append(_error(name, "It should be a/an String", "datatype_mismatch"))
            elif field["type"] == "custom_dropdown" and value not in field["choices"]:
                errors.append(_error(name, f"It should be one of these values: '{','.join(field['choices'])}'"))
        return errors

    def _update(self, ticket: dict[str, Any], change: Any) -> Response:
        if not isinstance(change, dict) or not change:
            return json_response(400, {"description": "Validation failed", "errors": [
                {"field": "ticket", "message": "It should be a/an key/value pair", "code": "datatype_mismatch"}]})
        for field in change:
            if field not in UPDATABLE:
                return _invalid(field, "Unexpected/invalid field in request", "invalid_field")
        if "group_id" in change and change["group_id"] is not None and change["group_id"] not in self.groups:
            return _invalid("group_id", "There is no group matching the given group_id")
        if "priority" in change and change["priority"] not in (1, 2, 3, 4):
            return _invalid("priority", "It should be one of these values: '1,2,3,4'")
        if "tags" in change and not (isinstance(change["tags"], list)
                                     and all(isinstance(t, str) for t in change["tags"])):
            return _invalid("tags", "It should be an Array of Strings", "datatype_mismatch")
        if "custom_fields" in change and (errors := self._custom_field_errors(change["custom_fields"])):
            return json_response(400, {"description": "Validation failed", "errors": errors})
        ticket.update({k: v for k, v in change.items() if k != "custom_fields"})  # tags included: replaced
        ticket["custom_fields"] = {**ticket["custom_fields"], **change.get("custom_fields", {})}  # only those named
        ticket["updated_at"] = self._stamp()
        self.applied.setdefault(ticket["id"], []).append(dict(change))
        return json_response(200, dict(ticket))

    def _add_note(self, ticket_id: int, body: Any) -> Response:
        if ticket_id not in self.tickets:
            return Response(status=404)
        if not isinstance(body, dict) or not isinstance(body.get("body"), str) or not body["body"]:
            return _invalid("body", "It should be a/an String", "missing_field")
        text = html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<br\s*/?>", "\n", body["body"])))
        note = {"id": next(self._ids), "ticket_id": ticket_id, "body": body["body"], "body_text": text,
                "private": body.get("private", True), "incoming": False, "source": 2, "user_id": 1,
                "created_at": self._stamp()}
        self.conversations[ticket_id].append(note)
        return json_response(201, note)
