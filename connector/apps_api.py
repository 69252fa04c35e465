"""The API behind the helpdesk sidebar apps: what Deskroute decided about a ticket, and agents' feedback.

The apps call it through the helpdesk's own proxy (Zendesk's `client.request({secure: true})`, Freshworks'
request templates), with `Authorization: Bearer <DESKROUTE_APP_TOKEN>` filled in by the helpdesk from the
app's secure setting: the token never reaches the agent's browser. Without the token set, the API is off.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote

from flask import Blueprint, Flask, Response, jsonify, request
from pydantic import BaseModel, Field, ValidationError

from connector.classify.redact import redact
from connector.corrections import FEEDBACK_PREFIX, is_move, iso
from connector.models import TicketEvent, TicketState, candidates
from connector.services import Services
from connector.store import TicketRecord
from connector.store.corrections import FeedbackRefused
from connector.store.stats import CONFIRMED
from platforms.freshdesk import web_address as freshdesk_web_address

log = logging.getLogger(__name__)
MIN_TOKEN_LENGTH = 32
TIER_NAMES = {"rules": "keyword rule", "local": "local model", "llm": "Claude", "triage": "triage"}


class Feedback(BaseModel):
    """What the sidebar's "Right" / "Wrong? tell us why" sends."""

    verdict: Literal["right", "wrong"]
    category: str | None = Field(None, max_length=100)
    comment: str | None = Field(None, max_length=1000)
    agent_id: str | None = Field(None, max_length=64)


def app_token(master: str, platform: str) -> str:
    """The token one helpdesk's app sends: derived from DESKROUTE_APP_TOKEN, so an agent who reaches the
    proxy of one helpdesk can't speak for the other, and one secret is all the processes need."""
    return hmac.new(master.encode(), f"deskroute-app:{platform}".encode(), hashlib.sha256).hexdigest()


def category_title(name: str) -> str:
    """"billing" -> "Billing"; a group-level label "ambiguous:billing|refunds_cancellation" -> "Billing or
    Refunds cancellation"."""
    members = candidates(name)
    if members:
        return " or ".join(category_title(member) for member in members)
    return name.replace("_", " ").capitalize()


def decision_view(services: Services, record: TicketRecord) -> dict[str, Any]:
    """The sidebar's view of a ticket's one decision."""
    classification, decision = record.classification, record.decision
    mapping = services.mappings.get(record.platform)
    category = decision.category if decision else None
    confidence = decision.confidence if decision else (classification.confidence if classification else 0.0)
    tier = decision.tier if decision else (classification.tier if classification else "triage")
    reason = classification.reason if classification else ""
    headline = category_title(category) if category else "Sent to triage"
    # The local model's reason repeats its numbers; the rules' keyword and Claude's words say why.
    why = "" if tier == "local" else reason
    summary = " · ".join(part for part in (headline, f"{confidence:.0%}", TIER_NAMES.get(tier, tier), why) if part)
    runner_ups = []
    for alternative in classification.alternatives if classification else []:
        route = mapping.categories.get(alternative.category) if mapping else None
        if route is not None:
            runner_ups.append({"category": alternative.category, "title": category_title(alternative.category),
                               "confidence": alternative.confidence, "group_id": route.group_id})
    chain = services.store.corrections.for_ticket(record.platform, record.ticket_id)
    reroutes = [{"at": iso(c["rerouted_at"]), "from_group_id": c["previous_group_id"],
                 "to_group_id": c["corrected_group_id"], "category": c["corrected_category"], "via": c["via"]}
                for c in chain if is_move(c)]
    feedback = [{"at": iso(c["rerouted_at"]), "verdict": "right" if c["via"] == CONFIRMED else "wrong",
                 "category": c["corrected_category"], "agent_id": c["agent_id"]} for c in chain if not is_move(c)]
    return {
        "platform": record.platform, "ticket_id": record.ticket_id, "state": record.state, "summary": summary,
        "category": category, "confidence": round(confidence, 4), "tier": tier, "reason": reason,
        "group_id": decision.group_id if decision else None, "triage": bool(decision.triage) if decision else True,
        "runner_ups": runner_ups, "language": classification.language if classification else None,
        "sentiment": classification.sentiment if classification else None, "reroutes": reroutes,
        "feedback": feedback,
        "categories": [{"name": name, "title": category_title(name), "description": c.description}
                       for name, c in services.taxonomy.categories.items()],
    }


def record_feedback(services: Services, record: TicketRecord, feedback: Feedback) -> None:
    """Keep an agent's verdict as a correction team leads review and export like a re-route. "wrong" with a
    category is a correction to that category's group; "right" confirms the label, accepted at once.

    The ticket's text comes later: a worker fetches it (the reconciler fills in corrections kept without
    text), so a slow or rate-limited helpdesk never holds the agent's click.

    Raises FeedbackRefused past the limits: one verdict per agent and ticket, a few per ticket an hour
    (DESKROUTE_FEEDBACK_PER_TICKET_PER_HOUR) and some per install (DESKROUTE_FEEDBACK_PER_HOUR), since every
    agent holds the app's token through the helpdesk."""
    decision = record.decision
    predicted = decision.category if decision else None
    category = feedback.category if feedback.verdict == "wrong" else predicted
    mapping = services.mappings[record.platform]
    route = mapping.categories.get(category) if category else None
    group_id = route.group_id if route else (decision.group_id if decision and candidates(category) else None)
    now = services.clock()
    confirmed = feedback.verdict == "right"
    via = CONFIRMED if confirmed else "agent_feedback"
    # "Right" about a group-level decision confirms the destination, not which of its categories it is:
    # that waits, pending, for a team lead to settle (the Corrections page offers the choice).
    settled = confirmed and not candidates(category)
    change_id = f"{FEEDBACK_PREFIX}{uuid.uuid4().hex}"
    services.store.corrections.add_feedback({
        "platform": record.platform, "ticket_id": record.ticket_id, "change_id": change_id, "text": None,
        "predicted_category": predicted, "predicted_group_id": decision.group_id if decision else None,
        "predicted_tier": decision.tier if decision else None,
        "predicted_confidence": decision.confidence if decision else None,
        "previous_group_id": decision.group_id if decision else None,
        "corrected_group_id": group_id, "corrected_category": category,
        "agent_id": feedback.agent_id, "via": via,
        "routed_at": record.applied_at, "rerouted_at": now, "status": "accepted" if settled else "pending",
        "reviewed_by": f"agent:{feedback.agent_id or 'unknown'}" if settled else None,
        "reviewed_at": now if settled else None, "created_at": now,
        "comment": redact(feedback.comment) if feedback.comment else None,
    }, per_hour=services.settings.deskroute_feedback_per_ticket_per_hour,
        install_per_hour=services.settings.deskroute_feedback_per_hour)
    if services.settings.deskroute_corrections_keep_text:
        # A job of its own (not a group change): a worker fetches and redacts the text, with the queue's
        # retries and backoff while the helpdesk is down.
        services.queue.enqueue(TicketEvent(platform=record.platform, kind="correction.text_needed",
                                           ticket_id=record.ticket_id, dedup_key=change_id))
        services.wake()
    log.info("agent feedback recorded", extra={"platform": record.platform, "ticket_id": record.ticket_id,
                                               "verdict": feedback.verdict, "category": category})


class Every:
    """True from `due()` at most once per `seconds` (monotonic): for a log line that mustn't repeat in a flood."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def due(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self.seconds:
                return False
            self._last = now
            return True


def register(app: Flask, services: Services) -> None:
    """Mount /apps/api on the app."""
    bp = Blueprint("apps_api", __name__, url_prefix="/apps/api")
    cap_warning = Every(60.0)  # the install-wide feedback cap's warning, once a minute
    master = services.settings.deskroute_app_token.get_secret_value()
    off = None
    if not master:
        off = "the helpdesk apps are off: set DESKROUTE_APP_TOKEN (see `deskroute app`)"
    elif len(master) < MIN_TOKEN_LENGTH:
        off = f"the helpdesk apps are off: DESKROUTE_APP_TOKEN must be {MIN_TOKEN_LENGTH} characters or more"
        log.warning("sidebar API off: DESKROUTE_APP_TOKEN is too short")
    expected = {name: f"Bearer {app_token(master, name)}".encode() for name in services.mappings}
    origins = helpdesk_origins(services)

    def error(status: int, message: str) -> tuple[Response, int]:
        return jsonify(error=message), status

    @bp.before_request
    def guard() -> Any:
        if off:
            return error(404, off)
        if request.method == "OPTIONS":
            return Response(status=204)  # a CORS preflight carries no credentials
        platform = (request.view_args or {}).get("platform", "")
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected.get(platform, b"\x00" * 71)):  # this helpdesk's own token
            return error(401, "missing or wrong app token")
        return None

    @bp.after_request
    def cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        response.headers.add("Vary", "Origin")
        if origin and origin in origins:  # only the helpdesks this install is connected to
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        return response

    def find(platform: str, ticket_id: str) -> TicketRecord | tuple[Response, int]:
        if platform not in services.mappings:
            return error(404, f"unknown helpdesk {platform!r}")
        record = services.store.tickets.get(platform, ticket_id)
        if record is None or record.state not in (TicketState.DONE, TicketState.TRIAGE, TicketState.SHADOW):
            return error(404, "Deskroute hasn't routed this ticket")
        return record

    @bp.route("/tickets/<platform>/<ticket_id>", methods=["GET", "OPTIONS"])
    def ticket(platform: str, ticket_id: str) -> Any:
        found = find(platform, ticket_id)
        return found if isinstance(found, tuple) else jsonify(decision_view(services, found))

    @bp.route("/tickets/<platform>/<ticket_id>/feedback", methods=["POST", "OPTIONS"])
    def feedback(platform: str, ticket_id: str) -> Any:
        found = find(platform, ticket_id)
        if isinstance(found, tuple):
            return found
        try:
            body = Feedback.model_validate(request.get_json(force=True, silent=False))
        except (ValidationError, ValueError) as exc:
            return error(400, f"bad feedback: {str(exc).splitlines()[0]}")
        except RecursionError:
            return error(400, "bad feedback: nested too deeply")
        predicted = found.decision.category if found.decision else None
        chain = services.store.corrections.for_ticket(platform, ticket_id)
        if body.verdict == "wrong":
            if not body.category:
                return error(400, "a 'wrong' verdict needs the right category")
            if body.category not in services.taxonomy.categories:
                return error(422, f"unknown category {body.category!r}")
            if body.category == predicted:
                return error(422, f"{body.category!r} is what Deskroute decided: that verdict is 'right'")
        else:
            if predicted is None:
                return error(422, "a triaged ticket has no category to confirm: say which one is right")
            if body.category not in (None, predicted):
                return error(422, "'right' confirms Deskroute's category; to name another, the verdict is 'wrong'")
            if any(is_move(c) for c in chain):
                return error(409, "an agent has moved this ticket since: the move is what gets learned")
        try:
            record_feedback(services, found, body)
        except FeedbackRefused as refused:
            # The install's cap is worth an operator's look (an app token used far more than agents click), once a
            # minute: whoever floods the endpoint shouldn't flood the logs too.
            log.log(logging.WARNING if refused.reason == "install_too_many" and cap_warning.due() else logging.INFO,
                    "agent feedback refused", extra={"platform": platform, "ticket_id": ticket_id,
                                                     "why": refused.reason})
            return feedback_refused(refused, body, services.settings)
        return jsonify(status="recorded"), 201

    app.register_blueprint(bp)


def feedback_refused(refused: FeedbackRefused, feedback: Feedback, settings: Any) -> tuple[Response, int]:
    """409 for a repeated verdict; 429 with Retry-After for one past the ticket's or the install's hourly cap."""
    if refused.reason == "repeated":
        said = ("this agent has already given feedback on this ticket" if feedback.agent_id else
                "feedback naming no agent has already been given on this ticket (each agent gives one)")
        return jsonify(error=said), 409
    seconds = max(1, math.ceil(refused.retry_after))
    if refused.reason == "install_too_many":
        said = f"Deskroute has had {settings.deskroute_feedback_per_hour} verdicts from all tickets in the last hour"
    else:
        said = f"this ticket has had {settings.deskroute_feedback_per_ticket_per_hour} verdicts in the last hour"
    response = jsonify(error=f"{said}, the most it takes per hour; try again in {math.ceil(seconds / 60)} min")
    response.headers["Retry-After"] = str(seconds)
    return response, 429


def helpdesk_origin(settings: Any, platform: str) -> str | None:
    """The helpdesk's web address (its agents' browser origin), if it is configured."""
    if platform == "zendesk" and settings.zendesk_subdomain:
        return f"https://{settings.zendesk_subdomain}.zendesk.com"
    if platform == "freshdesk" and settings.freshdesk_domain:
        return freshdesk_web_address(settings.freshdesk_domain)
    return None


def ticket_url(settings: Any, platform: str, ticket_id: str) -> str | None:
    """Where an agent opens the ticket in its helpdesk."""
    origin = helpdesk_origin(settings, platform)
    if origin is None:
        return None
    ticket = quote(str(ticket_id), safe="")
    return f"{origin}/agent/tickets/{ticket}" if platform == "zendesk" else f"{origin}/a/tickets/{ticket}"


def helpdesk_origins(services: Services) -> set[str]:
    """The browser origins of the helpdesks this install talks to."""
    return {o for name in services.mappings if (o := helpdesk_origin(services.settings, name))}
