"""Agents' re-routes of tickets Deskroute routed, kept as corrections, and their export.

A correction is one move by a person to another group after our routing. Moves by our own writes
and by triggers are not corrections. Repeated moves (ping-pong) form an ordered chain per ticket,
whose last group is the label a team lead accepts or rejects. Webhooks start a reconciliation; a
scheduled poll catches the moves a webhook missed; both are idempotent (keyed by the helpdesk's
change id).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from connector.classify.clean import clean
from connector.classify.redact import redact
from connector.mappings import PlatformMapping
from connector.models import OUT_OF_SCOPE, GroupChange, TicketState, ambiguous, candidates
from connector.store import Store, TicketRecord
from connector.store.corrections import FEEDBACK_PREFIX
from platforms.base import Platform

log = logging.getLogger(__name__)

# Columns of the export, in order (README documents each).
COLUMNS = (
    "id", "platform", "ticket_id", "seq", "is_final", "rerouted_at", "seconds_after_routing",
    "predicted_category", "predicted_group_id", "predicted_tier", "predicted_confidence",
    "previous_group_id", "corrected_group_id", "corrected_category", "final_category", "label",
    "agent_id", "via", "status", "reviewed_by", "reviewed_at", "text", "comment",
)
STATUSES = ("pending", "accepted", "rejected")


def why_not_learnable(row: dict[str, Any], label: str | None, categories: Collection[str]) -> str | None:
    """Why accepting this correction (relabelled `label`, if given) would teach the local model nothing, or None.
    The model learns categories: a group several categories share, the triage group or a group no category
    maps to needs the reviewer to say which category the ticket was."""
    learned = label or row["label"] or row["corrected_category"]
    if learned in categories or learned == OUT_OF_SCOPE:
        return None
    if choices := candidates(learned):
        return f"correction {row['id']}: its group serves {' and '.join(choices)}: say which category it was"
    return (f"correction {row['id']}: it ends in {learned}, which is no category: choose the category the ticket "
            "belonged to, or reject it")


def is_move(correction: dict[str, Any]) -> bool:
    """A correction that moved the ticket in the helpdesk (not an agent's sidebar feedback)."""
    return not str(correction["change_id"]).startswith(FEEDBACK_PREFIX)
# A helpdesk's clock and ours may disagree by this much when we order its changes against our routing.
CLOCK_SLACK_SECONDS = 120
# Longest text kept of a ticket no category took (taxonomy suggestions): its opening says what it is about.
UNROUTED_CHARS = 2000


def unrouted_text(raw: str) -> str:
    """What is kept of a ticket no category took: the customer's own words, redacted, the opening only."""
    return redact(clean(raw))[:UNROUTED_CHARS]


def category_for_group(mapping: PlatformMapping, group_id: str | None) -> str:
    """The category a group stands for: its one category, `triage`, `ambiguous:a|b` or `unmapped:<id>`."""
    categories = [name for name, route in mapping.categories.items() if route.group_id == group_id]
    if len(categories) == 1:
        return categories[0]
    if categories:
        return ambiguous(categories)
    if group_id == mapping.triage.group_id:
        return "triage"
    return f"unmapped:{group_id}"


def _after_our_routing(changes: list[GroupChange], record: TicketRecord) -> list[GroupChange]:
    """The changes that came after our write: after our last change if the history shows it, else by time."""
    ours = [i for i, change in enumerate(changes) if change.source == "ours"]
    if ours:
        return changes[ours[-1] + 1:]
    if record.applied_at is None:
        return changes
    cutoff = record.applied_at - CLOCK_SLACK_SECONDS
    return [c for c in changes if c.snapshot or c.at is None or c.at.timestamp() >= cutoff]


class Reconciler:
    """Turns a ticket's group changes into corrections."""

    def __init__(self, *, store: Store, platforms: dict[str, Platform], mappings: dict[str, PlatformMapping],
                 keep_text: bool, clock: Callable[[], float], keep_unrouted: bool = False):
        self.store = store
        self.platforms = platforms
        self.mappings = mappings
        self.keep_text = keep_text
        self.keep_unrouted = keep_unrouted  # taxonomy suggestions: where triaged tickets end, and unmapped groups
        self.clock = clock

    def reconcile(self, platform_name: str, ticket_id: str, *, actor_hint: str | None = None) -> int:
        """Record the agent re-routes not yet known, and give the ticket's corrections kept without text
        (an agent's sidebar feedback, recorded at once) their text; returns how many re-routes. Raises
        PlatformError."""
        record = self.store.tickets.get(platform_name, ticket_id)
        if record is None or record.decision is None:
            return 0  # a ticket we never decided: nothing to correct
        platform = self.platforms[platform_name]
        chain = self.store.corrections.for_ticket(platform_name, ticket_id)
        # Moves count only after our own routing (not in shadow mode, nor before we finished).
        routed = record.state in (TicketState.DONE, TicketState.TRIAGE)
        moves = self._moves(platform, record, chain) if routed else []
        raw = None
        if self.keep_text and (moves or any(c["text"] is None for c in chain)):
            raw = platform.fetch_ticket(ticket_id).text
        text = redact(raw) if raw is not None else None
        for change, previous in moves:
            self._add(record, change, previous, text, actor_hint)
        if text is not None:
            self.store.corrections.fill_text(platform_name, ticket_id, text)
        if moves and self.keep_unrouted:
            try:  # for taxonomy suggestions only: never a reason to redo the reconcile
                self._unrouted(record, moves[-1][0], platform, raw)
            except Exception as exc:
                log.warning("unrouted ticket not kept", extra={"platform": platform_name, "ticket_id": ticket_id,
                                                               "error": type(exc).__name__})
        if routed:
            self.store.tickets.mark_checked(platform_name, ticket_id, now=self.clock())
        return len(moves)

    def fill_text(self, platform_name: str, ticket_id: str) -> int:
        """Give the ticket's corrections kept without text (an agent's sidebar feedback) its redacted text;
        returns how many. Raises PlatformError."""
        chain = self.store.corrections.for_ticket(platform_name, ticket_id)
        if not self.keep_text or all(c["text"] is not None for c in chain):
            return 0
        # A text an earlier correction of the ticket already keeps: each verdict would otherwise cost a fetch.
        kept = next((c["text"] for c in chain if c["text"] is not None), None)
        text = kept if kept is not None else redact(self.platforms[platform_name].fetch_ticket(ticket_id).text)
        return self.store.corrections.fill_text(platform_name, ticket_id, text)

    def _unrouted(self, record: TicketRecord, last: GroupChange, platform: Platform, raw: str | None) -> None:
        """Taxonomy suggestions: a kept (triaged) ticket's final group; or keep a ticket an agent moved to a
        group no category maps to (unless a guardrail decided it: a category wouldn't change that)."""
        assert last.group_id is not None and record.decision is not None and record.classification is not None
        now = self.clock()
        if self.store.suggestions.moved(record.platform, record.ticket_id, final_group_id=last.group_id, now=now):
            return
        if record.classification.guardrail is not None or not category_for_group(
                self.mappings[record.platform], last.group_id).startswith("unmapped:"):
            return
        if raw is None:
            raw = platform.fetch_ticket(record.ticket_id).text
        self.store.suggestions.keep(
            platform=record.platform, ticket_id=record.ticket_id, text=unrouted_text(raw),
            reason="unmapped", guess=record.decision.category or record.classification.category,
            guess_confidence=record.decision.confidence, group_id=record.decision.group_id,
            final_group_id=last.group_id, now=now)

    def _moves(self, platform: Platform, record: TicketRecord,
               chain: list[dict[str, Any]]) -> list[tuple[GroupChange, str | None]]:
        """The agents' moves not yet recorded, each with the group the ticket left."""
        assert record.decision is not None
        known = {c["change_id"] for c in chain}
        changes = _after_our_routing(platform.group_changes(record.ticket_id), record)
        seen = [i for i, change in enumerate(changes) if change.change_id in known]
        if seen:  # histories replay from the start: carry on after the last change already recorded
            changes = changes[seen[-1] + 1:]
        # Where the ticket last was: an agent's sidebar feedback ("feedback:" rows) suggests, it doesn't move.
        last_group = next((c["corrected_group_id"] for c in reversed(chain) if is_move(c)), record.decision.group_id)
        moves: list[tuple[GroupChange, str | None]] = []
        for change in changes:
            if change.source != "agent":
                last_group = change.group_id or last_group
            elif change.group_id is not None and change.group_id != last_group:
                moves.append((change, last_group))
                last_group = change.group_id
        return moves

    def _add(self, record: TicketRecord, change: GroupChange, previous: str | None, text: str | None,
             actor_hint: str | None) -> None:
        decision = record.decision
        assert decision is not None and record.classification is not None
        # A snapshot's stamp is the ticket's last update, whatever it was: the move is when we noticed it.
        at = change.at.timestamp() if change.at and not change.snapshot else self.clock()
        corrected = category_for_group(self.mappings[record.platform], change.group_id)
        seq = self.store.corrections.add({  # numbered by the store: the sidebar may add to this chain meanwhile
            "platform": record.platform, "ticket_id": record.ticket_id, "change_id": change.change_id,
            "text": text, "predicted_category": decision.category or record.classification.category,
            "predicted_group_id": decision.group_id, "predicted_tier": decision.tier,
            "predicted_confidence": decision.confidence, "previous_group_id": previous,
            "corrected_group_id": change.group_id, "corrected_category": corrected,
            "agent_id": change.actor_id or actor_hint, "via": change.via, "routed_at": record.applied_at,
            "rerouted_at": at, "status": "pending", "created_at": self.clock(),
        })
        if seq is not None:
            log.info("correction recorded", extra={"platform": record.platform, "ticket_id": record.ticket_id,
                                                   "seq": seq, "predicted": decision.category,
                                                   "corrected": corrected})


# --- export --------------------------------------------------------------------------------------

def iso(value: float | None) -> str | None:
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds") if value is not None else None


def export_rows(rows: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Rows with the export's columns: times as ISO 8601, the delay in seconds, the label to learn."""
    for row in rows:
        delay = row["rerouted_at"] - row["routed_at"] if row["routed_at"] is not None else None
        yield {
            **{column: row.get(column) for column in COLUMNS},
            "is_final": bool(row["is_final"]),
            "rerouted_at": iso(row["rerouted_at"]),
            "reviewed_at": iso(row["reviewed_at"]),
            "seconds_after_routing": round(delay, 1) if delay is not None else None,
            "label": row["label"] or row["final_category"],
        }


def _spreadsheet_safe(value: Any) -> Any:
    # A cell starting with = + - @ is a formula to Excel and Sheets; ticket text must never become one.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    """CSV with a header, UTF-8 with a byte-order mark so that spreadsheets read accents right."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in export_rows(rows):
        writer.writerow({k: _spreadsheet_safe(v) for k, v in row.items()})
    return "\ufeff" + out.getvalue()


def to_jsonl(rows: Iterable[dict[str, Any]]) -> str:
    """One JSON object per line."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in export_rows(rows))
