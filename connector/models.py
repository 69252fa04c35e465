"""The plain data that flows between webhooks, the queue, the classifier and the helpdesk adapters.

`platforms/` imports only this module from `connector`, so nothing here may import Flask or the store.
IDs are strings everywhere: Zendesk's are 64-bit integers, Zendesk webhook ids are ULIDs, and a third
helpdesk may use anything.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")
Tier = Literal["rules", "local", "llm", "triage"]
# correction.text_needed: an agent's sidebar feedback was kept without the ticket's text; a worker fetches it.
# (Older versions queued that job as a ticket.group_changed keyed "feedback:...": the worker still takes those.)
EventKind = Literal["ticket.created", "ticket.group_changed", "correction.text_needed"]

# The tag every write-back carries. It tells our own earlier write apart from an agent's (the loop
# guard in triggers), and tells a retried event that its write already landed.
OUR_TAG_PREFIX = "deskroute_"  # every tag Deskroute writes of its own (mapping tags are the admin's)
ROUTED_TAG = "deskroute_routed"
TRIAGE_TAG = "deskroute_needs_triage"
OUT_OF_SCOPE = "out_of_scope"  # a label the local model learns like any other, meaning "not ours to route"
# Below this many feedback examples the active model hasn't seen, there is nothing to judge a retrain's candidate
# on: the retrain waits (connector/feedback.py).
MIN_HOLDOUT = 5
# A label for "one of these categories, all routed to the same group": `ambiguous:billing|refunds_cancellation`.
# A group-level decision carries it (the destination is sure, the category isn't), and so does a
# correction to a group several categories share; a team lead settles which one it is.
AMBIGUOUS = "ambiguous:"
GROUP_LEVEL_TAG = "deskroute_group_level"


def ambiguous(categories: list[str]) -> str:
    """The label for "one of these": in alphabetical order, so one set of categories has one label whichever
    tier (or re-route) produced it."""
    return AMBIGUOUS + "|".join(sorted(categories))


def candidates(label: str | None) -> list[str]:
    """The categories an `ambiguous:a|b` label stands for; [] for any other label."""
    if not label or not label.startswith(AMBIGUOUS):
        return []
    return label.removeprefix(AMBIGUOUS).split("|")


class EventState(StrEnum):
    """Where an event (a row of the durable queue) stands. Every accepted event ends in DONE, TRIAGE or DEAD."""

    PENDING = "pending"  # waiting for a worker (new, or retrying later)
    RUNNING = "running"  # leased by a worker
    DONE = "done"
    TRIAGE = "triage"  # finished, and a person has to route the ticket
    DEAD = "dead"  # given up on; an admin can send it through again

    @property
    def final(self) -> bool:
        return self in (EventState.DONE, EventState.TRIAGE, EventState.DEAD)


class TicketState(StrEnum):
    """How far a ticket's one routing got."""

    NEW = "new"  # claimed by its first event, not yet classified
    DECIDED = "decided"  # classified; the write-back hasn't landed yet
    DONE = "done"  # routed in the helpdesk
    TRIAGE = "triage"  # sent to the triage group
    SHADOW = "shadow"  # classified and recorded, deliberately not written back (DESKROUTE_SHADOW)
    DEAD = "dead"  # its event was given up on


class Ticket(BaseModel):
    """A helpdesk ticket as the router sees it."""

    platform: str
    id: str
    subject: str = ""
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    group_id: str | None = None
    priority: Priority | None = None
    status: str | None = None
    # The helpdesk's own last-modified stamp, sent back for optimistic concurrency (Zendesk safe_update).
    updated_at: str | None = None
    via: str | None = None
    solved: bool = False  # solved or closed: its group is final, so it can teach the local model
    # pending, on hold, solved or closed, or assigned to an agent: a person has taken it on
    taken_up: bool = False
    created_at: str | None = None  # ISO 8601, as the helpdesk gives it

    def age_at(self, when: float) -> float | None:
        """Seconds from the ticket's creation to `when` (None if the helpdesk gave no readable date)."""
        try:
            created = datetime.fromisoformat(self.created_at) if self.created_at else None
        except ValueError:
            return None
        return None if created is None or created.tzinfo is None else when - created.timestamp()

    @property
    def text(self) -> str:
        """Subject and body, as the classifier reads them."""
        return f"{self.subject}\n{self.description}".strip()


class TicketEvent(BaseModel):
    """One webhook delivery we accepted, reduced to what the worker needs (never ticket text)."""

    platform: str
    kind: EventKind
    ticket_id: str
    # Two deliveries with the same key are the same event; the store keeps only the first.
    dedup_key: str
    # The sender's id for this delivery (Zendesk event id or invocation id), for support and logs.
    source_id: str | None = None
    occurred_at: datetime | None = None
    # ticket.group_changed only:
    group_id: str | None = None
    previous_group_id: str | None = None
    actor_id: str | None = None
    via: str | None = None


class Ignored(BaseModel):
    """A valid delivery that needs no work, answered with 200 {"ignored": reason}."""

    reason: str


class GroupChange(BaseModel):
    """A ticket moved to another group, as the helpdesk tells it."""

    change_id: str  # unique within the ticket: an audit event id, or a snapshot of the ticket's state
    group_id: str | None
    previous_group_id: str | None = None
    at: datetime | None = None
    actor_id: str | None = None
    # agent: a person moved it; ours: Deskroute's own write; rule: a trigger or automation did.
    source: Literal["agent", "ours", "rule"]
    via: str | None = None
    # True when the helpdesk keeps no history and this is just the ticket's group now.
    snapshot: bool = False


class InstallStep(BaseModel):
    """One thing `deskroute install` did, found, or would do."""

    action: Literal["create", "update", "delete", "exists", "plan", "manual"]
    what: str  # "webhook Deskroute", "trigger Deskroute: route new tickets", ...
    detail: str = ""  # the API call, or the manual step


class InstallReport(BaseModel):
    """What install or uninstall did in a helpdesk."""

    platform: str
    steps: list[InstallStep] = Field(default_factory=list)
    # A secret the admin must put in the settings (Zendesk's webhook signing secret).
    secret_setting: str | None = None
    secret: str | None = None

    def add(self, action: str, what: str, detail: str = "") -> None:
        self.steps.append(InstallStep(action=action, what=what, detail=detail))  # type: ignore[arg-type]


class Group(BaseModel):
    """A helpdesk group that tickets can be routed to."""

    id: str
    name: str


class TicketField(BaseModel):
    """A ticket field of a helpdesk, as `deskroute doctor` checks the mapping's `fields:` against it."""

    id: str  # what a write names it by: Zendesk's number, Freshdesk's name (cf_...)
    title: str
    type: str  # the helpdesk's own name for its type ("tagger", "custom_dropdown", ...), for messages
    # text: takes any text; dropdown: takes one of `options`; other: nothing Deskroute can write (system
    # fields, checkboxes, dates, numbers, multi-selects...).
    kind: Literal["text", "dropdown", "other"]
    options: list[str] = Field(default_factory=list)  # a dropdown's option values (Zendesk: each option's tag)
    active: bool = True


class Classification(BaseModel):
    """What the cascade concluded about a ticket, and how."""

    category: str | None
    confidence: float = Field(ge=0.0, le=1.0)
    tier: Tier
    reason: str
    priority: Priority | None = None
    # The guardrail that forced human review, if any; it wins over every tier.
    guardrail: str | None = None
    # Each tier's best guess and confidence, in the order they ran.
    tiers: list[TierResult] = Field(default_factory=list)
    model_version: str | None = None
    latency_ms: float = 0.0
    # From the LLM tier, when it ran: its reading of the ticket, the prompt version, every call made.
    sentiment: str | None = None
    language: str | None = None
    summary: str | None = None
    prompt_version: str | None = None
    llm_calls: list[LLMCall] = Field(default_factory=list)
    # The next most likely categories (from the local model), best first; not the one decided.
    alternatives: list[Alternative] = Field(default_factory=list)


class Alternative(BaseModel):
    """A category a tier also considered, with its confidence (the sidebar's "Route to ..." buttons)."""

    category: str
    confidence: float


class TierResult(BaseModel):
    """One tier's answer, kept for the record even when it didn't decide."""

    tier: Tier
    category: str | None
    confidence: float
    reason: str = ""
    model: str | None = None  # the LLM tier: which model answered
    ranked: list[Alternative] = Field(default_factory=list)  # the local tier: its top categories, best first


class LLMCall(BaseModel):
    """One request to Claude, for the usage and cost record."""

    model: str
    outcome: Literal["ok", "invalid", "error"]
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    error: str | None = None


class RoutingDecision(BaseModel):
    """What to write back to the helpdesk."""

    category: str | None
    group_id: str
    tags: list[str]
    priority: Priority
    note: str
    triage: bool
    tier: Tier
    confidence: float
    reason: str
    # Ticket fields to set in the same write (field id or name -> value), from the mapping's `fields:`.
    fields: dict[str, str] = Field(default_factory=dict)


Classification.model_rebuild()
