"""What every loopback helpdesk fake shares: a request log, fault injection and a background server."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Fault:
    """A canned failure for the next matching request."""

    status: int  # 0: no failure, answer normally but only after `delay` (the caller may time out)
    method: str | None = None
    path: str | None = None  # regular expression on the path
    retry_after: float | None = None
    delay: float = 0.0

    def matches(self, request: Request) -> bool:
        return ((self.method is None or self.method == request.method)
                and (self.path is None or re.search(self.path, request.path) is not None))


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, as the helpdesks send them."""
    return Response(json.dumps(payload), status=status, headers=headers,
                    content_type="application/json; charset=utf-8")


class FakeHelpdesk:
    """In-memory helpdesk state behind a WSGI app; subclasses implement `route`."""

    def __init__(self, *, seed: int = 0):
        # Every request as (method, path, parsed JSON body or None), faults included.
        self.requests: list[tuple[str, str, Any]] = []
        self.faults: deque[Fault] = deque()
        self.random_faults: dict[int, float] = {}  # status -> probability per request
        self.retry_after = 1.0  # for random 429s
        self._random = random.Random(seed)
        self.lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self.address = ""  # host:port once started

    def fail_next(self, status: int, *, times: int = 1, method: str | None = None, path: str | None = None,
                  retry_after: float | None = None) -> None:
        """Answer the next `times` matching requests with `status`."""
        for _ in range(times):
            self.faults.append(Fault(status, method, path, retry_after))

    def slow_next(self, seconds: float, *, times: int = 1, method: str | None = None, path: str | None = None) -> None:
        """Process the next matching requests normally, but answer only after `seconds`.

        With a client timeout shorter than that, the write lands and the caller never hears: the
        ambiguous failure that exactly-once write-back has to survive.
        """
        for _ in range(times):
            self.faults.append(Fault(0, method, path, delay=seconds))

    def calls(self, method: str, path_pattern: str) -> list[Any]:
        """Bodies of the requests with this method whose path matches the pattern."""
        return [body for m, path, body in self.requests if m == method and re.fullmatch(path_pattern, path)]

    # --- server ----------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a background thread; returns host:port."""
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access-log line per request
        self._server = make_server(host, port, self.wsgi, threaded=True)
        threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True).start()
        self.address = f"{host}:{self._server.server_port}"
        return self.address

    def stop(self) -> None:
        """Stop the background server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        """The WSGI entry point."""
        request = Request(environ)
        return self._handle(request)(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.mimetype == "application/x-www-form-urlencoded":
            body = None  # a browser's form (the OAuth consent page): routes read request.form
        else:
            raw = request.get_data()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return json_response(400, {"error": "InvalidJSON"})
        with self.lock:
            self.requests.append((request.method, request.path, body))
            fault = self._take_fault(request)
        if fault is not None and fault.status == 0:
            with self.lock:
                response = self.route(request, body)
            time.sleep(fault.delay)
            return response
        if fault is not None:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            error = "TooManyRequests" if fault.status == 429 else "ServiceUnavailable"
            return json_response(fault.status, {"error": error}, headers)
        with self.lock:
            return self.route(request, body)

    def _take_fault(self, request: Request) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.matches(request):
                del self.faults[i]
                return fault
        for status, probability in self.random_faults.items():
            if self._random.random() < probability:
                return Fault(status, retry_after=self.retry_after if status == 429 else None)
        return None

    def route(self, request: Request, body: Any) -> Response:
        """Answer one request that drew no fault (called with the lock held)."""
        raise NotImplementedError
