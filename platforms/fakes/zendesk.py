"""A loopback Zendesk for tests, benches and the demo.

It speaks the small part of the Support API that Deskroute uses, with Zendesk's real behaviours:
OAuth (platforms/fakes/oauth.py: client credentials, authorization code with PKCE, rotating refresh
tokens, expiring access tokens) or basic auth with an API token (refused with `refuse_basic`, as
from 30 April 2027), `tags` in a PUT replace the ticket's tags, safe_update answers 409 when the
ticket changed, an unknown group answers 422 RecordInvalid, and faults (429 with Retry-After, 503)
can be queued or drawn at random. Custom ticket fields (`add_field`) are listed at /api/v2/ticket_fields
with the system fields, and written through `custom_fields` as Zendesk does: an unknown field id, or a
value that isn't one of a drop-down's option tags, is silently ignored (200); a drop-down's value is a
tag, added to the ticket's tags (and the previous option's tag removed).
Point zenpy at it with ZENPY_FORCE_NETLOC and ZENPY_FORCE_SCHEME=http.
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
from platforms.fakes.oauth import INVALID_TOKEN, FakeOAuthServer

_TICKET = re.compile(r"^/api/v2/tickets/(\d+)(?:\.json)?$")
_AUDITS = re.compile(r"^/api/v2/tickets/(\d+)/audits(?:\.json)?$")
_ME = re.compile(r"^/api/v2/users/me(?:\.json)?$")
_GROUPS = re.compile(r"^/api/v2/groups(?:\.json)?$")
_CURRENT_TOKEN = re.compile(r"^/api/v2/oauth/tokens/current(?:\.json)?$")
_FIELDS = re.compile(r"^/api/v2/ticket_fields(?:\.json)?$")
# Every account has these; they can't be written through custom_fields.
SYSTEM_FIELDS = {1001: ("Subject", "subject"), 1002: ("Description", "description"), 1003: ("Status", "status"),
                 1004: ("Type", "tickettype"), 1005: ("Priority", "priority"), 1006: ("Group", "group"),
                 1007: ("Assignee", "assignee")}
# The confidential OAuth client every fake has; its tokens act as user 900001.
OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET = "deskroute", "fake-oauth-client-secret"
PRIORITIES = ("low", "normal", "high", "urgent")
_CONFLICT = ("Safe Update prevented the update due to outdated ticket data. "
             "Please fetch the latest ticket data and try again.")


class FakeZendesk(FakeHelpdesk):
    """In-memory Zendesk."""

    def __init__(self, *, groups: dict[int, str] | None = None, seed: int = 0,
                 clock: Callable[[], float] = time.time, refuse_basic: bool = False,
                 token_seconds: float | None = None):
        super().__init__(seed=seed)
        # Tokens expire on real time: the ticket clock (`clock`) is often frozen by tests.
        self.oauth = FakeOAuthServer(token_seconds=token_seconds)
        self.users = {900001: {"id": 900001, "name": "Deskroute", "email": "deskroute@example.com", "role": "admin"},
                      900002: {"id": 900002, "name": "Ada Admin", "email": "ada@example.com", "role": "admin"}}
        self.oauth.add_client(OAUTH_CLIENT_ID, secret=OAUTH_CLIENT_SECRET, user_id=900001)
        self.oauth.consenting_user = 900002
        self.refuse_basic = refuse_basic  # as every Zendesk will from 30 April 2027
        self.basic_calls = 0  # API calls made with basic auth (an API token)
        self.groups = dict(groups or {})
        # Custom ticket fields: id -> {"title", "type", "active", "options": [(title, tag), ...]}.
        self.fields: dict[int, dict[str, Any]] = {}
        self.field_values: dict[int, dict[int, Any]] = {}  # ticket id -> field id -> value
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        # Updates that took effect, per ticket, oldest first (rejected ones are only in `requests`).
        self.applied: dict[int, list[dict[str, Any]]] = {}
        self.audits: dict[int, list[dict[str, Any]]] = {}
        self.me = self.users[900001]  # the user the API token belongs to
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

    def add_field(self, field_id: int, title: str, *, type: str = "tagger", options: list[str] | None = None,
                  active: bool = True) -> None:
        """An admin creates a custom ticket field; a drop-down's `options` are its option tags."""
        with self.lock:
            self.fields[field_id] = {"title": title, "type": type, "active": active,
                                     "options": [(tag.replace("_", " ").capitalize(), tag) for tag in options or []]}

    def field_value(self, ticket_id: int, field_id: int) -> Any:
        """A custom field's value on a ticket (None if unset)."""
        return self.field_values.get(ticket_id, {}).get(field_id)

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

    def _authenticate(self, request: Request) -> int | Response:
        """The user a request acts as, or the 401 Zendesk answers."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            user_id = self.oauth.user_for(header.removeprefix("Bearer "))
            return user_id if user_id is not None else json_response(401, INVALID_TOKEN)
        if header.startswith("Basic "):
            self.basic_calls += 1
            if not self.refuse_basic:
                return int(str(self.me["id"]))
        return json_response(401, {"error": "Couldn't authenticate you"})

    def route(self, request: Request, body: Any) -> Response:
        if request.path.startswith("/oauth/"):
            return self.oauth.route(request, body) or json_response(404, {"error": "InvalidEndpoint"})
        user_id = self._authenticate(request)
        if isinstance(user_id, Response):
            return user_id
        if match := _TICKET.match(request.path):
            ticket_id = int(match.group(1))
            if request.method == "GET":
                return self._show(ticket_id)
            if request.method == "PUT":
                return self._update(ticket_id, body, client=request.headers.get("User-Agent", ""), author_id=user_id)
        if _CURRENT_TOKEN.match(request.path) and request.method == "DELETE":
            self.oauth.revoke(request.headers["Authorization"].removeprefix("Bearer "))
            return Response(status=204)
        if (match := _AUDITS.match(request.path)) and request.method == "GET":
            audits = self.audits.get(int(match.group(1)))
            if audits is None:
                return json_response(404, {"error": "RecordNotFound", "description": "Not found"})
            return json_response(200, {"audits": audits, "next_page": None, "previous_page": None,
                                       "count": len(audits), "meta": {"has_more": False},
                                       "links": {"next": None, "prev": None}})
        if _ME.match(request.path) and request.method == "GET":
            return json_response(200, {"user": dict(self.users[user_id])})
        if _FIELDS.match(request.path) and request.method == "GET":
            fields = self._ticket_fields()
            return json_response(200, {"ticket_fields": fields, "next_page": None, "previous_page": None,
                                       "count": len(fields), "meta": {"has_more": False},
                                       "links": {"next": None, "prev": None}})
        if _GROUPS.match(request.path) and request.method == "GET":
            groups = [{"id": gid, "name": name} for gid, name in sorted(self.groups.items())]
            return json_response(200, {"groups": groups, "next_page": None, "previous_page": None,
                                       "count": len(groups), "meta": {"has_more": False},
                                       "links": {"next": None, "prev": None}})
        return json_response(404, {"error": "InvalidEndpoint", "description": "Not found"})

    def _ticket_fields(self) -> list[dict[str, Any]]:
        fields = [{"id": fid, "title": title, "type": kind, "active": True, "removable": False,
                   "url": f"https://acme.zendesk.com/api/v2/ticket_fields/{fid}.json"}
                  for fid, (title, kind) in SYSTEM_FIELDS.items()]
        for fid, field in sorted(self.fields.items()):
            shown: dict[str, Any] = {"id": fid, "title": field["title"], "type": field["type"],
                                     "active": field["active"], "removable": True,
                                     "url": f"https://acme.zendesk.com/api/v2/ticket_fields/{fid}.json"}
            if field["type"] in ("tagger", "multiselect"):
                shown["custom_field_options"] = [{"id": fid * 100 + n, "name": name, "raw_name": name, "value": tag,
                                                  "default": False} for n, (name, tag) in enumerate(field["options"])]
            fields.append(shown)
        return fields

    def _public(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """The ticket as the API shows it: every active custom field, set or not."""
        values = self.field_values.get(ticket["id"], {})
        return {**ticket, "custom_fields": [{"id": fid, "value": values.get(fid)}
                                            for fid, field in sorted(self.fields.items()) if field["active"]]}

    def _set_fields(self, ticket: dict[str, Any], entries: Any) -> None:
        """Zendesk's handling of `custom_fields`: what it can't use, it ignores without a word."""
        values = self.field_values.setdefault(ticket["id"], {})
        for entry in entries if isinstance(entries, list) else []:
            raw = entry.get("id") if isinstance(entry, dict) else None
            field_id = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else 0
            field = self.fields.get(field_id)
            if field is None or not field["active"]:
                continue  # not a custom field of this account
            value = entry.get("value")
            if field["type"] == "tagger":
                tags = [tag for _, tag in field["options"]]
                if value not in (*tags, None, ""):
                    continue  # not one of the options' tags
                old = values.get(field_id)
                ticket["tags"] = [t for t in ticket["tags"] if t != old]
                if value and value not in ticket["tags"]:
                    ticket["tags"].append(value)  # a drop-down's value is a tag on the ticket
            values[field_id] = value or None

    def _show(self, ticket_id: int) -> Response:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            return json_response(404, {"error": "RecordNotFound", "description": "Not found"})
        return json_response(200, {"ticket": self._public(ticket)})

    def _update(self, ticket_id: int, body: Any, *, client: str, author_id: int) -> Response:
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
        if "custom_fields" in change:
            self._set_fields(ticket, change["custom_fields"])
        if isinstance(change.get("comment"), dict):
            self.comments[ticket_id].append(dict(change["comment"]))
        ticket["updated_at"] = self._stamp()
        self.applied.setdefault(ticket_id, []).append(dict(change))
        self.audits[ticket_id].append(self._audit(ticket_id, author_id=author_id, channel="api", events=events,
                                                  client=client))
        return json_response(200, {"ticket": self._public(ticket), "audit": {"ticket_id": ticket_id, "events": []}})
