"""Taxonomy suggestions: the tickets no category took (`unrouted`), and the clusters found in them
(`suggestions`, one row per computation; the newest is the one shown)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from connector.store.db import Part

RUNS_KEPT = 5  # older computations go when a new one is saved


class Suggestions(Part):
    """The `unrouted` and `suggestions` tables."""

    def keep(self, *, platform: str, ticket_id: str, text: str, reason: str, guess: str | None = None,
             guess_confidence: float | None = None, group_id: str | None = None,
             final_group_id: str | None = None, now: float) -> bool:
        """Keep a ticket no category took (its text already redacted); False if it was kept already."""
        rows = self.execute(
            "INSERT INTO unrouted (platform, ticket_id, text, reason, guess, guess_confidence, group_id,"
            " final_group_id, created_at, moved_at) VALUES (:platform, :ticket_id, :text, :reason, :guess,"
            " :guess_confidence, :group_id, :final_group_id, :now, :moved_at)"
            " ON CONFLICT (platform, ticket_id) DO NOTHING RETURNING ticket_id",
            {"platform": platform, "ticket_id": ticket_id, "text": text, "reason": reason, "guess": guess,
             "guess_confidence": guess_confidence, "group_id": group_id, "final_group_id": final_group_id,
             "now": now, "moved_at": now if final_group_id is not None else None})
        return bool(rows)

    def moved(self, platform: str, ticket_id: str, *, final_group_id: str, now: float) -> bool:
        """An agent moved a kept ticket: remember its group; False if the ticket isn't kept."""
        rows = self.execute(
            "UPDATE unrouted SET final_group_id = :group, moved_at = :now WHERE platform = :platform"
            " AND ticket_id = :ticket_id RETURNING ticket_id",
            {"group": final_group_id, "now": now, "platform": platform, "ticket_id": ticket_id})
        return bool(rows)

    def count(self) -> int:
        return int(self.execute("SELECT count(*) AS n FROM unrouted")[0]["n"])

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The `limit` most recently kept tickets, oldest first (a stable order for clustering)."""
        rows = self.execute(
            "SELECT platform, ticket_id, text, reason, guess, final_group_id, created_at FROM unrouted"
            " ORDER BY created_at DESC, platform, ticket_id LIMIT :limit", {"limit": limit})
        return [dict(r) for r in reversed(rows)]

    def texts(self, keys: list[tuple[str, str]], limit: int) -> list[str]:
        """The texts of the first `limit` of these tickets still kept (retention may have forgotten some)."""
        found: list[str] = []
        for platform, ticket_id in keys:
            if len(found) == limit:
                break
            rows = self.execute("SELECT text FROM unrouted WHERE platform = :platform AND ticket_id = :ticket_id",
                                {"platform": platform, "ticket_id": ticket_id})
            found += [rows[0]["text"]] if rows else []
        return found

    def final_groups(self) -> dict[tuple[str, str], str]:
        """(platform, ticket_id) -> the group an agent moved it to, for every kept ticket that was moved."""
        rows = self.execute("SELECT platform, ticket_id, final_group_id FROM unrouted WHERE final_group_id IS NOT NULL")
        return {(r["platform"], r["ticket_id"]): r["final_group_id"] for r in rows}

    # --- computed suggestions --------------------------------------------------------------------

    def save(self, clusters: list[dict[str, Any]], *, n_tickets: int, now: float) -> int:
        """Store a computation (older ones beyond the last few go); its id."""
        with self.db.transaction() as tx:
            run = int(tx.execute(
                "INSERT INTO suggestions (computed_at, n_tickets, clusters) VALUES (:now, :n, :clusters) RETURNING id",
                {"now": now, "n": n_tickets, "clusters": json.dumps(clusters)})[0]["id"])
            tx.execute("DELETE FROM suggestions WHERE id <= :oldest", {"oldest": run - RUNS_KEPT})
        return run

    def latest(self, *, examples: int = 3) -> dict[str, Any] | None:
        """The newest computation: `computed_at`, `n_tickets` and its `clusters`, each with up to `examples`
        example texts still kept and `final_groups`, {(platform, group id): tickets} agents moved them to,
        most first."""
        rows = self.execute("SELECT * FROM suggestions ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        run = dict(rows[0])
        clusters = json.loads(run["clusters"])
        moved = self.final_groups()
        for cluster in clusters:
            keys = [(platform, ticket_id) for platform, ticket_id in cluster["members"]]
            cluster["examples"] = self.texts(keys, examples)
            cluster["final_groups"] = Counter(
                (key[0], moved[key]) for key in keys if key in moved).most_common()
        run["clusters"] = clusters
        return run

    def purge(self, before: float) -> int:
        """Forget kept tickets, and computations, older than `before`; how many tickets."""
        gone = self.execute("DELETE FROM unrouted WHERE created_at < :before RETURNING ticket_id", {"before": before})
        self.execute("DELETE FROM suggestions WHERE computed_at < :before", {"before": before})
        return len(gone)
