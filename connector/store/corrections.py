"""Corrections (agents' re-routes, the feedback dataset) and imported history (solved tickets)."""

from __future__ import annotations

from typing import Any, Literal

from connector.store.db import Part, Transaction

# The first key of the advisory locks that order one ticket's corrections (PostgreSQL); two-key locks don't
# share a key space with the scheduler's one-key lock.
CHAIN_LOCK = 0x636F7272  # "corr"
FEEDBACK_PREFIX = "feedback:"  # change_id of a correction an agent sent from the helpdesk sidebar
FEEDBACK_WINDOW_SECONDS = 3600.0  # the caps on sidebar feedback count this far back
FEEDBACK_LOCK = 0x66656564  # "feed": PostgreSQL's lock for the install-wide cap


class FeedbackRefused(Exception):
    """An agent's sidebar verdict not kept: `repeated` (this agent, or feedback naming no agent, already gave one
    on the ticket), `too_many` (the ticket's hourly cap) or `install_too_many` (the install's hourly cap); for
    the caps, a slot frees in `retry_after` seconds."""

    def __init__(self, reason: Literal["repeated", "too_many", "install_too_many"], retry_after: float = 0.0):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _append_sql(row: dict[str, Any]) -> str:
    """Insert `row` at the end of its ticket's chain (the next `seq`), once per change id."""
    return (f"INSERT INTO corrections ({', '.join(row)}, seq) VALUES ({', '.join(':' + k for k in row)},"
            " (SELECT coalesce(max(seq), 0) + 1 FROM corrections WHERE platform = :platform"
            "  AND ticket_id = :ticket_id))"
            " ON CONFLICT (platform, ticket_id, change_id) DO NOTHING RETURNING seq")


def _lock_chain(tx: Transaction, row: dict[str, Any]) -> None:
    """PostgreSQL (READ COMMITTED): hold the ticket's chain until commit, or two inserts would read one max(seq)."""
    tx.execute(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK},"
               " hashtext(CAST(:platform AS text) || '/' || CAST(:ticket_id AS text)))",
               {"platform": row["platform"], "ticket_id": row["ticket_id"]})


class Corrections(Part):
    """The `corrections` and `history` tables."""

    def add(self, row: dict[str, Any]) -> int | None:
        """Keep one correction; its `seq`, or None if this change was already recorded.

        Without a `seq` in `row`, the correction goes at the end of its ticket's chain, numbered inside the
        insert: the reconciler and the sidebar may add to one ticket at once, and must not share a number.
        """
        if "seq" in row:  # given (imports, tests)
            sql = (f"INSERT INTO corrections ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"
                   " ON CONFLICT (platform, ticket_id, change_id) DO NOTHING RETURNING seq")
            rows = self.execute(sql, row)
            return rows[0]["seq"] if rows else None
        if self.db.sqlite:  # one writer at a time, and a statement's reads happen under its write lock
            rows = self.execute(_append_sql(row), row)
        else:
            with self.db.transaction() as tx:
                _lock_chain(tx, row)
                rows = [dict(r) for r in tx.execute(_append_sql(row), row)]
        return rows[0]["seq"] if rows else None

    def add_feedback(self, row: dict[str, Any], *, per_hour: int, install_per_hour: int | None = None) -> int | None:
        """Keep an agent's sidebar verdict (change_id `feedback:...`) at the end of its ticket's chain; its `seq`.

        Raises FeedbackRefused if this agent (`agent_id`; feedback naming none counts as one more agent) already
        gave one on the ticket, if the ticket had `per_hour` in the hour before `created_at`, or the install
        `install_per_hour`. Checked and kept in one transaction under the feedback and chain locks (SQLite: its
        write lock), so that web processes answering at once can't slip past the limits together.
        """
        now = row["created_at"]
        with self.db.transaction() as tx:
            if not self.db.sqlite:
                if install_per_hour is not None:  # always before the chain's lock, so no two wait on each other
                    tx.execute(f"SELECT pg_advisory_xact_lock({FEEDBACK_LOCK})")
                _lock_chain(tx, row)
            given = tx.execute("SELECT agent_id, created_at FROM corrections WHERE platform = :platform"
                               " AND ticket_id = :ticket_id AND change_id LIKE :feedback",
                               {"platform": row["platform"], "ticket_id": row["ticket_id"],
                                "feedback": FEEDBACK_PREFIX + "%"})
            if any((g["agent_id"] or None) == (row.get("agent_id") or None) for g in given):
                raise FeedbackRefused("repeated")
            recent = sorted(g["created_at"] for g in given
                            if g["created_at"] is not None and g["created_at"] > now - FEEDBACK_WINDOW_SECONDS)
            if len(recent) >= per_hour:  # the slot that frees first: when enough of them are an hour old
                raise FeedbackRefused("too_many", recent[len(recent) - per_hour] + FEEDBACK_WINDOW_SECONDS - now)
            if install_per_hour is not None:
                # The install's `install_per_hour`-th newest verdict this hour: a slot frees when it is an hour old.
                nth_newest = tx.execute(
                    "SELECT rerouted_at FROM corrections WHERE rerouted_at > :since AND change_id LIKE :feedback"
                    " ORDER BY rerouted_at DESC LIMIT 1 OFFSET :skip",
                    {"since": now - FEEDBACK_WINDOW_SECONDS, "feedback": FEEDBACK_PREFIX + "%",
                     "skip": install_per_hour - 1})
                if nth_newest:
                    raise FeedbackRefused("install_too_many",
                                          nth_newest[0]["rerouted_at"] + FEEDBACK_WINDOW_SECONDS - now)
            rows = [dict(r) for r in tx.execute(_append_sql(row), row)]
        return rows[0]["seq"] if rows else None

    def fill_text(self, platform: str, ticket_id: str, text: str) -> int:
        """Give the ticket's corrections kept without text (the sidebar's, recorded at once) this text."""
        rows = self.execute("UPDATE corrections SET text = :text WHERE platform = :platform AND ticket_id = :ticket_id"
                            " AND text IS NULL RETURNING id", {"text": text, "platform": platform,
                                                               "ticket_id": ticket_id})
        return len(rows)

    def get(self, correction_id: int) -> dict[str, Any] | None:
        rows = self.execute("SELECT * FROM corrections WHERE id = :id", {"id": correction_id})
        return dict(rows[0]) if rows else None

    def for_ticket(self, platform: str, ticket_id: str) -> list[dict[str, Any]]:
        """A ticket's re-routes, in order."""
        return [dict(r) for r in self.execute(
            "SELECT * FROM corrections WHERE platform = :platform AND ticket_id = :ticket_id ORDER BY seq",
            {"platform": platform, "ticket_id": ticket_id})]

    def find(self, *, since: float | None = None, until: float | None = None, category: str | None = None,
             status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Re-routes, oldest first, each with `final_category` (the chain's last group) and `is_final`.

        `category` matches the predicted or the corrected category, or the label.
        """
        params = {"since": since, "until": until, "status": status, "category": category, "limit": limit}
        where = ["1 = 1"]
        for clause, key in (("c.rerouted_at >= :since", "since"), ("c.rerouted_at < :until", "until"),
                            ("c.status = :status", "status"),
                            ("(c.predicted_category = :category OR c.corrected_category = :category"
                             " OR c.label = :category)", "category")):
            if params[key] is not None:
                where.append(clause)
        sql = (
            "SELECT c.*, last.corrected_category AS final_category,"
            " CASE WHEN c.seq = last.seq THEN 1 ELSE 0 END AS is_final"
            " FROM corrections c JOIN corrections last ON last.platform = c.platform AND last.ticket_id = c.ticket_id"
            "  AND last.seq = (SELECT max(seq) FROM corrections m WHERE m.platform = c.platform"
            "                  AND m.ticket_id = c.ticket_id)"
            f" WHERE {' AND '.join(where)} ORDER BY c.rerouted_at, c.id")
        if limit is not None:
            sql += " LIMIT :limit"
        return [dict(r) for r in self.execute(sql, params)]

    def review(self, correction_id: int, *, status: str, reviewer: str, now: float, label: str | None = None) -> bool:
        """Accept or reject a correction (optionally with the label to learn); False if there is no such id."""
        rows = self.execute(
            "UPDATE corrections SET status = :status, reviewed_by = :reviewer, reviewed_at = :now,"
            " label = coalesce(:label, label) WHERE id = :id RETURNING id",
            {"status": status, "reviewer": reviewer, "now": now, "label": label, "id": correction_id})
        return bool(rows)

    def accepted(self) -> list[tuple[str, str, float]]:
        """(text, label, reviewed at) of accepted corrections that end their ticket's chain and have text."""
        rows = self.execute(
            "SELECT c.text, coalesce(c.label, c.corrected_category) AS label, c.reviewed_at FROM corrections c"
            " WHERE c.status = 'accepted' AND c.text IS NOT NULL"
            " AND c.seq = (SELECT max(seq) FROM corrections m WHERE m.platform = c.platform"
            "              AND m.ticket_id = c.ticket_id) ORDER BY c.id")
        return [(r["text"], r["label"], r["reviewed_at"]) for r in rows]

    # --- history (imported solved tickets) -------------------------------------------------------

    def add_history(self, rows: list[dict[str, Any]]) -> int:
        """Keep imported tickets (a later import of the same ticket replaces it); returns how many."""
        for row in rows:
            self.execute(
                "INSERT INTO history (platform, ticket_id, text, category, group_id, solved_at, imported_at)"
                " VALUES (:platform, :ticket_id, :text, :category, :group_id, :solved_at, :imported_at)"
                " ON CONFLICT (platform, ticket_id) DO UPDATE SET text = excluded.text, category = excluded.category,"
                " group_id = excluded.group_id, solved_at = excluded.solved_at, imported_at = excluded.imported_at",
                row)
        return len(rows)

    def history(self) -> list[tuple[str, str, float]]:
        """(text, category, imported at) of every imported ticket, in import order."""
        rows = self.execute("SELECT text, category, imported_at FROM history ORDER BY imported_at, platform, ticket_id")
        return [(r["text"], r["category"], r["imported_at"]) for r in rows]

    def text_count(self) -> int:
        """How many corrections keep their ticket's text, or an agent's comment."""
        return int(self.execute("SELECT count(*) AS n FROM corrections WHERE text IS NOT NULL"
                                " OR comment IS NOT NULL")[0]["n"])

    def forget_text(self) -> int:
        """Forget every correction's ticket text (and an agent's comment, which may quote it); how many."""
        return len(self.execute("UPDATE corrections SET text = NULL, comment = NULL"
                                " WHERE text IS NOT NULL OR comment IS NOT NULL RETURNING id"))
