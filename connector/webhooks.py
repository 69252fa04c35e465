"""`POST /webhooks/<platform>`: verify, parse, enqueue, answer. Never classifies, never calls the helpdesk.

Zendesk waits 10 s at most and trips a circuit breaker on errors, so a payload we can't use gets a
4xx with a JSON error, an irrelevant event gets 200 {"ignored": reason}, and only a failure to
persist (the one case where a retry helps) gets a 5xx.
"""

from __future__ import annotations

import logging
import sqlite3

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from connector.models import Ignored
from platforms.base import BadPayload, Unauthorized

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _answer(platform: str, code: int, **body: object) -> tuple[Response, int]:
    current_app.extensions["deskroute.webhook_requests"].labels(platform, str(code)).inc()
    return jsonify(body), code


@bp.post("/<platform>")
def receive(platform: str) -> tuple[Response, int]:
    """Accept one webhook delivery."""
    services = current_app.extensions["deskroute"]
    adapter = services.platforms.get(platform)
    if adapter is None:
        known = platform in services.mappings
        label = platform if known else "unknown"
        return _answer(label, 404, error=f"{platform} is not configured" if known else "unknown platform")
    limit = services.settings.deskroute_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _answer(platform, 413, error=f"body larger than {limit} bytes")
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:  # chunked bodies have no Content-Length; werkzeug stops at the limit
        return _answer(platform, 413, error=f"body larger than {limit} bytes")
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        adapter.verify(headers, body)
    except Unauthorized as exc:
        log.info("webhook rejected", extra={"platform": platform, "why": str(exc)})
        return _answer(platform, 401, error="invalid request")
    try:
        event = adapter.parse(headers, body)
    except BadPayload as exc:
        log.info("webhook payload unusable", extra={"platform": platform, "why": str(exc)})
        return _answer(platform, 400, error=str(exc))
    if isinstance(event, Ignored):
        return _answer(platform, 200, ignored=event.reason)
    try:
        event_id, created = services.queue.enqueue(event)
    except sqlite3.Error as exc:
        log.error("could not persist webhook", extra={"platform": platform, "ticket_id": event.ticket_id,
                                                      "error": type(exc).__name__})
        response, code = _answer(platform, 503, error="temporarily unable to accept events; retry")
        response.headers["Retry-After"] = "5"
        return response, code
    if not created:
        return _answer(platform, 200, ignored="duplicate", event_id=event_id)
    services.wake()
    # DEBUG: the job's own log lines carry these ids; an INFO line per webhook costs ~15% of intake throughput.
    log.debug("webhook accepted", extra={"platform": platform, "event_id": event_id, "ticket_id": event.ticket_id,
                                        "kind": event.kind, "source_id": event.source_id})
    return _answer(platform, 202, status="queued", event_id=event_id)
