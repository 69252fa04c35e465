"""`POST /webhooks/<platform>`: verify, parse, enqueue, answer. Never classifies, never calls the helpdesk.

Zendesk waits 10 s at most and trips a circuit breaker on errors, so a payload we can't use gets a
4xx with a JSON error, an irrelevant event gets 200 {"ignored": reason}, and only a failure to
persist (the one case where a retry helps) gets a 5xx.

This is the hot path (bench/ingest.py, which counts its cost): each helpdesk gets a static rule on
the app itself (a blueprint and a URL converter cost about 10% of a request), the views close over
the services instead of looking them up through Flask's context proxies, and answers are plain
json.dumps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, Response, request
from prometheus_client import Counter
from werkzeug.exceptions import RequestEntityTooLarge

from connector.models import Ignored
from connector.store import WEBHOOK_BUSY_MS, StoreUnavailable
from platforms.base import BadPayload, Unauthorized

if TYPE_CHECKING:
    from connector.services import Services

log = logging.getLogger(__name__)


def register(app: Flask, services: Services, answered: Counter) -> None:
    """Add the webhook endpoints; `answered` counts responses by platform and status."""
    limit = services.settings.deskroute_max_body_bytes
    too_large = f"body larger than {limit} bytes"

    counters: dict[tuple[str, int], Any] = {}  # labelled children, resolved once (labels() takes a lock)

    def answer(platform: str, code: int, **body: object) -> Response:
        counter = counters.get((platform, code))
        if counter is None:
            counter = counters.setdefault((platform, code), answered.labels(platform, str(code)))
        counter.inc()
        return Response(json.dumps(body), status=code, content_type="application/json")

    def unknown(platform: str) -> Response:
        return answer("unknown", 404, error="unknown platform")

    def receive(platform: str) -> Response:
        """Accept one webhook delivery."""
        adapter = services.platforms.get(platform)
        if adapter is None:
            return answer(platform, 404, error=f"{platform} is not configured")
        if request.content_length is not None and request.content_length > limit:
            return answer(platform, 413, error=too_large)
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:  # chunked bodies have no Content-Length; werkzeug stops at the limit
            return answer(platform, 413, error=too_large)
        # Werkzeug's headers are a case-insensitive mapping: adapters look names up in lower case.
        headers = cast(Mapping[str, str], request.headers)
        try:
            adapter.verify(headers, body)
        except Unauthorized as exc:
            log.info("webhook rejected", extra={"platform": platform, "why": str(exc)})
            return answer(platform, 401, error="invalid request")
        try:
            event = adapter.parse(headers, body)
        except BadPayload as exc:
            log.info("webhook payload unusable", extra={"platform": platform, "why": str(exc)})
            return answer(platform, 400, error=str(exc))
        if isinstance(event, Ignored):
            return answer(platform, 200, ignored=event.reason)
        try:
            event_id, created = services.queue.enqueue(event, busy_ms=WEBHOOK_BUSY_MS)
        except StoreUnavailable as exc:
            log.error("could not persist webhook", extra={"platform": platform, "ticket_id": event.ticket_id,
                                                          "error": str(exc)})
            response = answer(platform, 503, error="temporarily unable to accept events; retry")
            response.headers["Retry-After"] = "5"
            return response
        if not created:
            return answer(platform, 200, ignored="duplicate", event_id=event_id)
        services.wake()
        # DEBUG: the event's own log lines carry these ids; an INFO line per webhook costs ~15% of intake.
        log.debug("webhook accepted", extra={"platform": platform, "event_id": event_id,
                                             "ticket_id": event.ticket_id, "kind": event.kind})
        return answer(platform, 202, status="queued", event_id=event_id)

    for name in services.mappings:
        app.add_url_rule(f"/webhooks/{name}", endpoint=f"webhook_{name}", view_func=receive, methods=["POST"],
                         defaults={"platform": name})
    app.add_url_rule("/webhooks/<platform>", endpoint="webhook_unknown", view_func=unknown, methods=["POST"])
