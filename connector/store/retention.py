"""Retention: forgetting ticket text once it is older than the install keeps it."""

from __future__ import annotations

import json

from connector.store.db import Part
from connector.store.events import Events
from connector.store.suggestions import Suggestions

PURGED_NOTE = "(note removed after the retention period)"
PURGED_TEXT = "(removed after the retention period)"


class Retention(Part):
    def purge_text(self, before: float) -> dict[str, int]:
        """Forget ticket text older than `before` (seconds since the epoch): the redacted distillation
        text, every free text Claude wrote (its summary, its reasons, the note that quoted them),
        imported history's text, and the tickets kept for taxonomy suggestions (with the suggestions
        computed that long ago). Corrections keep their redacted text: they are the feedback dataset
        team leads review. Categories, confidences and tiers stay, for the record."""
        rows = self.execute(
            "SELECT platform, ticket_id, classification, decision FROM tickets WHERE coalesce(decided_at, 0) < :before"
            " AND text_purged_at IS NULL AND (training_text IS NOT NULL OR classification IS NOT NULL"
            " OR decision IS NOT NULL)", {"before": before})
        for row in rows:
            classification = json.loads(row["classification"]) if row["classification"] else None
            decision = json.loads(row["decision"]) if row["decision"] else None
            # Claude's words reach more than its own tier's record: when it declined, its reason became the
            # triage decision's. So once Claude saw the ticket, every reason goes.
            asked_claude = classification is not None and any(
                part.get("tier") == "llm" for part in (classification, *classification.get("tiers", [])))
            if classification is not None:
                classification["summary"] = None
                for part in (classification, *classification.get("tiers", [])):
                    if asked_claude or part.get("tier") == "llm":
                        part["reason"] = PURGED_TEXT
            if decision is not None:
                decision["note"] = PURGED_NOTE
                if asked_claude or decision.get("tier") == "llm":
                    decision["reason"] = PURGED_TEXT
            self.execute(
                "UPDATE tickets SET training_text = NULL, classification = :classification, decision = :decision,"
                " text_purged_at = :now WHERE platform = :platform AND ticket_id = :ticket_id",
                {"classification": json.dumps(classification) if classification is not None else None,
                 "decision": json.dumps(decision) if decision is not None else None, "now": self.clock(),
                 "platform": row["platform"], "ticket_id": row["ticket_id"]})
        history = self.execute("UPDATE history SET text = NULL WHERE imported_at < :before AND text IS NOT NULL"
                               " RETURNING ticket_id", {"before": before})
        Events(self.db).forget_route_again_copies(before)  # dead Route agains' copies of a classification
        unrouted = Suggestions(self.db).purge(before)
        return {"tickets": len(rows), "history": len(history), "unrouted": unrouted}
