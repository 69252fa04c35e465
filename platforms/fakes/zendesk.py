"""A loopback Zendesk for tests, benches and the demo.

It speaks the small part of the Support API that Deskroute uses, with Zendesk's real behaviours:
basic auth required, `tags` in a PUT replace the ticket's tags, safe_update answers 409 when the
ticket changed, an unknown group answers 422 RecordInvalid, and faults (429 with Retry-After, 503)
can be queued or drawn at random. Point zenpy at it with ZENPY_FORCE_NETLOC and ZENPY_FORCE_SCHEME=http.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from platforms.fakes.base import FakeHelpdesk, json_response

_TICKET = re.compile(r"^/api/v2/tickets/(\d+)(?:\.json)?$")
_GROUPS = re.compile(r"^/api/v2/groups(?:\.json)?$")
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
PRIORITIES = ("low", "normal", "high", "urgent")
_CONFLICT = ("Safe Update prevented the update due to outdated ticket data. "
             "Please fetch the latest ticket data and try again.")


class FakeZendesk(FakeHelpdesk):
    """In-memory Zendesk."""

    def __init__(self, *, groups: dict[int, str] | None = None, seed: int = 0):
        super().__init__(seed=seed)
        self.groups = dict(groups or {})
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        # Updates that took effect, per ticket, oldest first (rejected ones are only in `requests`).
        self.applied: dict[int, list[dict[str, Any]]] = {}
        self._stamps = itertools.count(1)

    # --- test-side controls ----------------------------------------------------------------------

    def add_ticket(self, ticket_id: int, *, subject: str, description: str, tags: list[str] | None = None,
                   group_id: int | None = None, priority: str | None = None) -> dict[str, Any]:
        """Create a ticket as a customer would."""
        with self.lock:
            ticket = {"id": ticket_id, "subject": subject, "description": description, "tags": list(tags or []),
                      "group_id": group_id, "priority": priority, "status": "new", "via": {"channel": "email"},
                      "created_at": self._stamp(), "updated_at": self._stamp()}
            self.tickets[ticket_id] = ticket
            self.comments[ticket_id] = [{"body": description, "public": True}]
        return ticket

    def touch(self, ticket_id: int, *, tags: list[str] | None = None) -> None:
        """An agent edits the ticket (new tags), so an earlier updated_stamp becomes stale."""
        with self.lock:
            ticket = self.tickets[ticket_id]
            if tags is not None:
                ticket["tags"] = list(tags)
            ticket["updated_at"] = self._stamp()

    def updates(self, ticket_id: int) -> list[dict[str, Any]]:
        """The `ticket` objects of every PUT received for this ticket (successful or not), oldest first."""
        return [body.get("ticket", {}) for body in self.calls("PUT", rf"/api/v2/tickets/{ticket_id}(\.json)?")
                if isinstance(body, dict)]

    def private_notes(self, ticket_id: int) -> list[str]:
        """Bodies of the internal notes on this ticket."""
        return [c["body"] for c in self.comments.get(ticket_id, []) if c.get("public") is False]

    # --- the API ---------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return (_EPOCH + timedelta(seconds=next(self._stamps))).strftime("%Y-%m-%dT%H:%M:%SZ")

    def route(self, request: Request, body: Any) -> Response:
        if not request.headers.get("Authorization"):
            return json_response(401, {"error": "Couldn't authenticate you"})
        if match := _TICKET.match(request.path):
            ticket_id = int(match.group(1))
            if request.method == "GET":
                return self._show(ticket_id)
            if request.method == "PUT":
                return self._update(ticket_id, body)
        if _GROUPS.match(request.path) and request.method == "GET":
            groups = [{"id": gid, "name": name} for gid, name in sorted(self.groups.items())]
            return json_response(200, {"groups": groups, "next_page": None, "previous_page": None,
                                       "count": len(groups), "meta": {"has_more": False},
                                       "links": {"next": None, "prev": None}})
        return json_response(404, {"error": "InvalidEndpoint", "description": "Not found"})

    def _show(self, ticket_id: int) -> Response:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            return json_response(404, {"error": "RecordNotFound", "description": "Not found"})
        return json_response(200, {"ticket": dict(ticket)})

    def _update(self, ticket_id: int, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("ticket"), dict):
            return json_response(400, {"error": "InvalidParameter", "description": "ticket is required"})
        change = body["ticket"]
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            return json_response(404, {"error": "RecordNotFound", "description": "Not found"})
        if change.get("safe_update") and change.get("updated_stamp") != ticket["updated_at"]:
            return json_response(409, {"error": "UpdateConflict", "description": _CONFLICT})
        group_id = change.get("group_id")
        if group_id is not None and group_id not in self.groups:
            return json_response(422, {"error": "RecordInvalid", "description": "Record validation errors",
                                       "details": {"group": [{"description": "Group: is invalid",
                                                              "error": "InvalidValue"}]}})
        if "priority" in change and change["priority"] not in (*PRIORITIES, None):
            return json_response(422, {"error": "RecordInvalid", "description": "Record validation errors",
                                       "details": {"priority": [{"description": "Priority: is invalid"}]}})
        for field in ("group_id", "priority", "tags", "status"):
            if field in change:
                ticket[field] = change[field]
        if isinstance(change.get("comment"), dict):
            self.comments[ticket_id].append(dict(change["comment"]))
        ticket["updated_at"] = self._stamp()
        self.applied.setdefault(ticket_id, []).append(dict(change))
        return json_response(200, {"ticket": dict(ticket), "audit": {"ticket_id": ticket_id, "events": []}})
