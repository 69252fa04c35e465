"""A loopback Zendesk for tests, benches and the demo.

It speaks the small part of the Support API that Deskroute uses, with Zendesk's real behaviours:
basic auth required, `tags` in a PUT replace the ticket's tags, safe_update answers 409 when the
ticket changed, an unknown group answers 422 RecordInvalid, and faults (429 with Retry-After, 503)
can be queued or drawn at random. Point zenpy at it with ZENPY_FORCE_NETLOC and ZENPY_FORCE_SCHEME=http.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

_TICKET = re.compile(r"^/api/v2/tickets/(\d+)(?:\.json)?$")
_GROUPS = re.compile(r"^/api/v2/groups(?:\.json)?$")
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Fault:
    """A canned failure for the next matching request."""

    status: int
    method: str | None = None
    path: str | None = None  # regular expression on the path
    retry_after: float | None = None

    def matches(self, request: Request) -> bool:
        return ((self.method is None or self.method == request.method)
                and (self.path is None or re.search(self.path, request.path) is not None))


class FakeZendesk:
    """In-memory Zendesk with a WSGI interface and an optional background HTTP server."""

    def __init__(self, *, groups: dict[int, str] | None = None, seed: int = 0):
        self.groups = dict(groups or {})
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        # Every request as (method, path, parsed JSON body or None); the body of a GET is None.
        self.requests: list[tuple[str, str, Any]] = []
        self.faults: deque[Fault] = deque()
        self.random_faults: dict[int, float] = {}  # status -> probability per request
        self.retry_after = 1.0  # for random 429s
        self._random = random.Random(seed)
        self._stamps = itertools.count(1)
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- test-side controls ----------------------------------------------------------------------

    def add_group(self, group_id: int, name: str) -> None:
        """Create a group."""
        self.groups[group_id] = name

    def add_ticket(self, ticket_id: int, *, subject: str, description: str, tags: list[str] | None = None,
                   group_id: int | None = None, priority: str | None = None) -> dict[str, Any]:
        """Create a ticket as a customer would."""
        ticket = {"id": ticket_id, "subject": subject, "description": description, "tags": list(tags or []),
                  "group_id": group_id, "priority": priority, "status": "new", "via": {"channel": "email"},
                  "created_at": self._stamp(), "updated_at": self._stamp()}
        with self._lock:
            self.tickets[ticket_id] = ticket
            self.comments[ticket_id] = [{"body": description, "public": True}]
        return ticket

    def touch(self, ticket_id: int, *, tags: list[str] | None = None) -> None:
        """An agent edits the ticket (new tags), so an earlier updated_stamp becomes stale."""
        with self._lock:
            ticket = self.tickets[ticket_id]
            if tags is not None:
                ticket["tags"] = list(tags)
            ticket["updated_at"] = self._stamp()

    def fail_next(self, status: int, *, times: int = 1, method: str | None = None, path: str | None = None,
                  retry_after: float | None = None) -> None:
        """Answer the next `times` matching requests with `status`."""
        for _ in range(times):
            self.faults.append(Fault(status, method, path, retry_after))

    def updates(self, ticket_id: int | None = None) -> list[dict[str, Any]]:
        """The `ticket` objects of every PUT received (successful or not), oldest first."""
        return [body.get("ticket", {}) for method, path, body in self.requests
                if method == "PUT" and isinstance(body, dict)
                and (ticket_id is None or _ticket_in(path) == ticket_id)]

    # --- server ----------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a background thread; returns host:port for ZENPY_FORCE_NETLOC."""
        self._server = make_server(host, port, self.wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-zendesk", daemon=True)
        self._thread.start()
        return f"{host}:{self._server.server_port}"

    def stop(self) -> None:
        """Stop the background server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- the API ---------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return (_EPOCH + timedelta(seconds=next(self._stamps))).strftime("%Y-%m-%dT%H:%M:%SZ")

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        """The WSGI entry point."""
        request = Request(environ)
        return self._handle(request)(environ, start_response)

    def _handle(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data()) if request.get_data() else None
        except ValueError:
            return _json(400, {"error": "InvalidJSON"})
        with self._lock:
            self.requests.append((request.method, request.path, body))
            fault = self._take_fault(request)
        if fault is not None:
            error = "TooManyRequests" if fault.status == 429 else "ServiceUnavailable"
            response = _json(fault.status, {"error": error})
            if fault.retry_after is not None:
                response.headers["Retry-After"] = f"{fault.retry_after:g}"
            return response
        if not request.headers.get("Authorization"):
            return _json(401, {"error": "Couldn't authenticate you"})
        if match := _TICKET.match(request.path):
            ticket_id = int(match.group(1))
            if request.method == "GET":
                return self._show(ticket_id)
            if request.method == "PUT":
                return self._update(ticket_id, body)
        if _GROUPS.match(request.path) and request.method == "GET":
            groups = [{"id": gid, "name": name} for gid, name in sorted(self.groups.items())]
            return _json(200, {"groups": groups, "next_page": None, "previous_page": None, "count": len(groups),
                               "meta": {"has_more": False}, "links": {"next": None, "prev": None}})
        return _json(404, {"error": "InvalidEndpoint", "description": "Not found"})

    def _take_fault(self, request: Request) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.matches(request):
                del self.faults[i]
                return fault
        for status, probability in self.random_faults.items():
            if self._random.random() < probability:
                return Fault(status, retry_after=self.retry_after if status == 429 else None)
        return None

    def _show(self, ticket_id: int) -> Response:
        with self._lock:
            ticket = self.tickets.get(ticket_id)
            if ticket is None:
                return _json(404, {"error": "RecordNotFound", "description": "Not found"})
            return _json(200, {"ticket": dict(ticket)})

    def _update(self, ticket_id: int, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("ticket"), dict):
            return _json(400, {"error": "InvalidParameter", "description": "ticket is required"})
        change = body["ticket"]
        with self._lock:
            ticket = self.tickets.get(ticket_id)
            if ticket is None:
                return _json(404, {"error": "RecordNotFound", "description": "Not found"})
            if change.get("safe_update") and change.get("updated_stamp") != ticket["updated_at"]:
                return _json(409, {"error": "UpdateConflict", "description": "Safe Update prevented the update due "
                                   "to outdated ticket data. Please fetch the latest ticket data and try again."})
            group_id = change.get("group_id")
            if group_id is not None and group_id not in self.groups:
                return _json(422, {"error": "RecordInvalid", "description": "Record validation errors",
                                   "details": {"group": [{"description": "Group: is invalid",
                                                          "error": "InvalidValue"}]}})
            if "priority" in change and change["priority"] not in ("low", "normal", "high", "urgent", None):
                return _json(422, {"error": "RecordInvalid", "description": "Record validation errors",
                                   "details": {"priority": [{"description": "Priority: is invalid"}]}})
            for field in ("group_id", "priority", "tags", "status"):
                if field in change:
                    ticket[field] = change[field]
            if isinstance(change.get("comment"), dict):
                self.comments[ticket_id].append(dict(change["comment"]))
            ticket["updated_at"] = self._stamp()
            return _json(200, {"ticket": dict(ticket), "audit": {"ticket_id": ticket_id, "events": []}})


def _ticket_in(path: str) -> int | None:
    match = _TICKET.match(path)
    return int(match.group(1)) if match else None


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json; charset=utf-8")
