"""Taxonomy suggestions: the tickets no category took (`unrouted`), and the clusters found in them
(`suggestions`, one row per computation; the newest is the one shown)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from connector.store.db import Part

RUNS_KEPT = 5  # older computations go when a new one is saved
# Pairs of keys per statement. Lists are padded to a multiple of it, so a statement has one of a few shapes
# (each compiled once per process), whatever the number of keys.
BATCH = 50


def _pairs(pairs: Sequence[tuple[str, str]], prefix: str) -> tuple[str, dict[str, str]]:
    """A subquery of these (non-empty) pairs, padded with the last one to a multiple of BATCH, for `(a, b) IN`,
    and its parameters. A SELECT from VALUES, not the VALUES alone: SQLite then looks the pairs up in an
    index instead of reading the whole table."""
    padded = list(pairs) + [pairs[-1]] * (-len(pairs) % BATCH)
    params: dict[str, str] = {}
    for i, (first, second) in enumerate(padded):
        params[f"{prefix}{i}a"], params[f"{prefix}{i}b"] = first, second
    rows = ", ".join(f"(:{prefix}{i}a, :{prefix}{i}b)" for i in range(len(padded)))
    return f"(SELECT column1, column2 FROM (VALUES {rows}) AS pairs)", params


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

    def recent(self, limit: int, *, leave_out: Sequence[tuple[str, str]] = ()) -> list[dict[str, Any]]:
        """The `limit` most recently kept tickets, oldest first (a stable order for clustering), but those an
        agent moved to one of the groups in `leave_out`, (platform, group id) pairs."""
        params: dict[str, Any] = {"limit": limit}
        where = ""
        if leave_out:
            values, groups = _pairs(leave_out, "g")
            where = f" WHERE final_group_id IS NULL OR (platform, final_group_id) NOT IN {values}"
            params.update(groups)
        rows = self.execute(
            "SELECT platform, ticket_id, text, reason, guess, final_group_id, created_at FROM unrouted" + where
            + " ORDER BY created_at DESC, platform, ticket_id LIMIT :limit", params)
        return [dict(r) for r in reversed(rows)]

    def texts(self, keys: list[tuple[str, str]], limit: int) -> list[str]:
        """The texts of the first `limit` of these tickets still kept (retention may have forgotten some):
        a statement per BATCH keys, in order, until there are enough (one, unless most are forgotten)."""
        found: list[str] = []
        for start in range(0, len(keys), BATCH):
            if len(found) >= limit:
                break
            batch = keys[start:start + BATCH]
            values, params = _pairs(batch, "k")
            rows = self.execute(
                f"SELECT platform, ticket_id, text FROM unrouted WHERE (platform, ticket_id) IN {values}", params)
            texts = {(r["platform"], r["ticket_id"]): r["text"] for r in rows}
            found += [texts[key] for key in batch if key in texts]
        return found[:limit]

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
        """The newest computation: its `id`, `computed_at`, `n_tickets` and `clusters`, each with up to
        `examples` example texts still kept and `final_groups`, {(platform, group id): tickets} agents moved
        them to, most first."""
        rows = self.execute("SELECT * FROM suggestions ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        run = dict(rows[0])
        run["clusters"] = self._filled(json.loads(run["clusters"]), examples)
        return run

    def cluster(self, run_id: int, number: int, *, examples: int = 3) -> dict[str, Any] | None:
        """Cluster `number` (from 1, as the Suggestions page counts them) of computation `run_id`, as latest()
        gives them; None if there is no such cluster, or no longer (newer computations replaced it)."""
        rows = self.execute("SELECT clusters FROM suggestions WHERE id = :id", {"id": run_id})
        clusters = json.loads(rows[0]["clusters"]) if rows else []
        if not 1 <= number <= len(clusters):
            return None
        return self._filled([clusters[number - 1]], examples)[0]

    def _filled(self, clusters: list[dict[str, Any]], examples: int) -> list[dict[str, Any]]:
        """The clusters with their `examples` and `final_groups`, as they are now."""
        moved = self.final_groups()
        for cluster in clusters:
            keys = [(platform, ticket_id) for platform, ticket_id in cluster["members"]]
            cluster["examples"] = self.texts(keys, examples)
            cluster["final_groups"] = Counter(
                (key[0], moved[key]) for key in keys if key in moved).most_common()
        return clusters

    def purge(self, before: float) -> int:
        """Forget kept tickets, and computations, older than `before`; how many tickets."""
        gone = self.execute("DELETE FROM unrouted WHERE created_at < :before RETURNING ticket_id", {"before": before})
        self.execute("DELETE FROM suggestions WHERE computed_at < :before", {"before": before})
        return len(gone)

    def forget(self) -> int:
        """Forget every kept ticket, whatever its age, and the suggestions computed from them (their keywords,
        names and ticket ids came from those tickets): suggestions are off. How many tickets."""
        self.execute("DELETE FROM suggestions")
        return len(self.execute("DELETE FROM unrouted RETURNING ticket_id"))
