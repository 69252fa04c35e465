"""A loopback Zendesk for tests, benches and the demo.

It speaks the small part of the Support API that Deskroute uses, with Zendesk's real behaviours:
basic auth required, `tags` in a PUT replace the ticket's tags, safe_update answers 409 when the
ticket changed, an unknown group answers 422 RecordInvalid, and faults (429 with Retry-After, 503)
can be queued or drawn at random. Point zenpy at it with ZENPY_FORCE_NETLOC and ZENPY_FORCE_SCHEME=http.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from platforms.fakes.base import FakeHelpdesk, json_response

_TICKET = re.compile(r"^/api/v2/tickets/(\d+)(?:\.json)?$")
_AUDITS = re.compile(r"^/api/v2/tickets/(\d+)/audits(?:\.json)?$")
_ME = re.compile(r"^/api/v2/users/me(?:\.json)?$")
_GROUPS = re.compile(r"^/api/v2/groups(?:\.json)?$")
PRIORITIES = ("low", "normal", "high", "urgent")
_CONFLICT = ("Safe Update prevented the update due to outdated ticket data. "
             "Please fetch the latest ticket data and try again.")


class FakeZendesk(FakeHelpdesk):
    """In-memory Zendesk."""

    def __init__(self, *, groups: dict[int, str] | None = None, seed: int = 0,
                 clock: Callable[[], float] = time.time):
        super().__init__(seed=seed)
        self.groups = dict(groups or {})
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        # Updates that took effect, per ticket, oldest first (rejected ones are only in `requests`).
        self.applied: dict[int, list[dict[str, Any]]] = {}
        self.audits: dict[int, list[dict[str, Any]]] = {}
        self.me = {"id": 900001, "name": "Deskroute"}  # the user the API token belongs to
        self.clock = clock
        self._last_stamp = 0
        self._audit_ids = itertools.count(7000)

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
            self.audits[ticket_id] = [self._audit(ticket_id, author_id=1, channel="email", events=[
                {"type": "Create", "field_name": "group_id", "value": str(group_id) if group_id else None}])]
        return ticket

    def move(self, ticket_id: int, group_id: int, *, by: str = "agent", author_id: int = 555) -> None:
        """Someone moves the ticket: an agent in the UI ("agent"), or a trigger firing on an agent's update."""
        with self.lock:
            ticket = self.tickets[ticket_id]
            event: dict[str, Any] = {"type": "Change", "field_name": "group_id", "value": str(group_id),
                                     "previous_value": str(ticket["group_id"]) if ticket["group_id"] else None}
            if by == "trigger":
                event["via"] = {"channel": "rule", "source": {"rel": "trigger", "from": {"id": 1, "title": "Escalate"}}}
            ticket["group_id"] = group_id
            ticket["updated_at"] = self._stamp()
            self.audits[ticket_id].append(self._audit(ticket_id, author_id=author_id, channel="web", events=[event]))

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

    def _audit(self, ticket_id: int, *, author_id: int, channel: str, events: list[dict[str, Any]],
               client: str = "") -> dict[str, Any]:
        audit_id = next(self._audit_ids)
        for n, event in enumerate(events):
            event.setdefault("id", audit_id * 10 + n)
        return {"id": audit_id, "ticket_id": ticket_id, "created_at": self._stamp(), "author_id": author_id,
                "metadata": {"system": {"client": client}, "custom": {}},
                "via": {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}}, "events": events}

    def _stamp(self) -> str:
        # Strictly increasing (a safe update must see a new stamp), and on the caller's clock.
        self._last_stamp = max(int(self.clock()), self._last_stamp + 1)
        return datetime.fromtimestamp(self._last_stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def route(self, request: Request, body: Any) -> Response:
        if not request.headers.get("Authorization"):
            return json_response(401, {"error": "Couldn't authenticate you"})
        if match := _TICKET.match(request.path):
            ticket_id = int(match.group(1))
            if request.method == "GET":
                return self._show(ticket_id)
            if request.method == "PUT":
                return self._update(ticket_id, body, client=request.headers.get("User-Agent", ""))
        if (match := _AUDITS.match(request.path)) and request.method == "GET":
            audits = self.audits.get(int(match.group(1)))
            if audits is None:
                return json_response(404, {"error": "RecordNotFound", "description": "Not found"})
            return json_response(200, {"audits": audits, "next_page": None, "previous_page": None,
                                       "count": len(audits), "meta": {"has_more": False},
                                       "links": {"next": None, "prev": None}})
        if _ME.match(request.path) and request.method == "GET":
            return json_response(200, {"user": dict(self.me)})
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

    def _update(self, ticket_id: int, body: Any, *, client: str) -> Response:
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
        events = []
        if "group_id" in change and change["group_id"] != ticket["group_id"]:
            events.append({"type": "Change", "field_name": "group_id", "value": str(change["group_id"]),
                           "previous_value": str(ticket["group_id"]) if ticket["group_id"] else None})
        for field in ("group_id", "priority", "tags", "status"):
            if field in change:
                ticket[field] = change[field]
        if isinstance(change.get("comment"), dict):
            self.comments[ticket_id].append(dict(change["comment"]))
        ticket["updated_at"] = self._stamp()
        self.applied.setdefault(ticket_id, []).append(dict(change))
        self.audits[ticket_id].append(self._audit(ticket_id, author_id=self.me["id"], channel="api", events=events,
                                                  client=client))
        return json_response(200, {"ticket": dict(ticket), "audit": {"ticket_id": ticket_id, "events": []}})
