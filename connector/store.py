"""The only module that touches the database: schema, migrations, and every read and write.

SQLite in WAL mode, one connection per thread, a busy timeout so that web and worker processes can
write at once. Multi-statement writes run as single statements (`UPDATE ... RETURNING`) so that a
claim or a state change is atomic without holding a transaction open across Python code.
Migrations are numbered functions, applied in order inside one IMMEDIATE transaction, so two
processes starting at once never apply one twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from connector.models import Classification, RoutingDecision, TicketEvent

log = logging.getLogger(__name__)
MIGRATIONS: list[Callable[[Database], None]] = []


def migration(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    """Register the next numbered migration."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(db: Database) -> None:
    db["events"].create({
        "id": int, "platform": str, "kind": str, "ticket_id": str, "dedup_key": str, "source_id": str,
        "data": str, "received_at": float, "state": str, "attempts": int, "due_at": float,
        "lease_owner": str, "outcome": str, "last_error": str, "finished_at": float,
    }, pk="id", not_null={"platform", "kind", "ticket_id", "dedup_key", "received_at", "state", "due_at"},
        defaults={"attempts": 0}, if_not_exists=True)
    db["events"].create_index(["platform", "dedup_key"], unique=True, if_not_exists=True)
    db["events"].create_index(["state", "due_at"], if_not_exists=True)
    db["tickets"].create({
        "platform": str, "ticket_id": str, "event_id": int, "first_seen_at": float, "state": str,
        "category": str, "confidence": float, "tier": str, "guardrail": str, "group_id": str, "priority": str,
        "triage": int, "classification": str, "decision": str, "model_version": str,
        "decided_at": float, "applied_at": float, "last_error": str,
    }, pk=("platform", "ticket_id"), not_null={"event_id", "first_seen_at", "state"}, if_not_exists=True)
    db["tickets"].create_index(["decided_at"], if_not_exists=True)
    db["group_changes"].create({
        "id": int, "event_id": int, "platform": str, "ticket_id": str, "group_id": str,
        "previous_group_id": str, "actor_id": str, "via": str, "occurred_at": str, "received_at": float,
    }, pk="id", if_not_exists=True)
    db["group_changes"].create_index(["event_id"], unique=True, if_not_exists=True)
    db["group_changes"].create_index(["platform", "ticket_id"], if_not_exists=True)
    db["models"].create({
        "version": int, "created_at": float, "labels": str, "n_examples": int, "metrics": str,
        "source": str, "sha256": str, "blob": bytes, "active": int,
    }, pk="version", if_not_exists=True)


AUTOCHECKPOINT_PAGES = 10_000  # about 40 MB of WAL
# How long a statement waits for another writer's lock. The webhook path waits less: Zendesk gives up
# after 10 s, so a delivery is better answered 503 (and sent again) than left hanging.
BUSY_MS, WEBHOOK_BUSY_MS = 30_000, 5_000
# TicketEvent fields with columns of their own; the rest go into events.data as JSON.
_EVENT_COLUMNS = frozenset({"platform", "kind", "ticket_id", "dedup_key", "source_id"})

@migration
def m002_llm(db: Database) -> None:
    db["llm_calls"].create({
        "id": int, "at": float, "platform": str, "ticket_id": str, "model": str, "outcome": str,
        "prompt_version": str, "latency_ms": float, "input_tokens": int, "output_tokens": int,
        "cache_read_tokens": int, "cache_write_tokens": int, "cost_usd": float, "error": str,
    }, pk="id", if_not_exists=True)
    db["llm_calls"].create_index(["at"], if_not_exists=True)
    columns = db["tickets"].columns_dict
    if "prompt_version" not in columns:
        db["tickets"].add_column("prompt_version", str)
    # Redacted ticket text, kept only for confident Claude decisions: the distillation set.
    if "training_text" not in columns:
        db["tickets"].add_column("training_text", str)


@migration
def m003_corrections(db: Database) -> None:
    db["corrections"].create({
        "id": int, "platform": str, "ticket_id": str, "change_id": str, "seq": int, "text": str,
        "predicted_category": str, "predicted_group_id": str, "predicted_tier": str, "predicted_confidence": float,
        "previous_group_id": str, "corrected_group_id": str, "corrected_category": str, "agent_id": str,
        "via": str, "routed_at": float, "rerouted_at": float, "status": str, "label": str, "reviewed_by": str,
        "reviewed_at": float, "created_at": float,
    }, pk="id", not_null={"platform", "ticket_id", "change_id", "seq", "status"}, if_not_exists=True)
    db["corrections"].create_index(["platform", "ticket_id", "change_id"], unique=True, if_not_exists=True)
    db["corrections"].create_index(["rerouted_at"], if_not_exists=True)
    # Solved tickets imported from the helpdesk, labelled with their final group's category.
    db["history"].create({
        "platform": str, "ticket_id": str, "text": str, "category": str, "group_id": str, "solved_at": str,
        "imported_at": float,
    }, pk=("platform", "ticket_id"), if_not_exists=True)
    if "reroute_checked_at" not in db["tickets"].columns_dict:
        db["tickets"].add_column("reroute_checked_at", float)
    db["tickets"].create_index(["applied_at"], if_not_exists=True)


@migration
def m004_config_changes(db: Database) -> None:
    db["config_changes"].create({
        "id": int, "at": float, "author": str, "file": str, "summary": str, "diff": str,
    }, pk="id", if_not_exists=True)



@migration
def m005_oauth_and_locks(db: Database) -> None:
    # One row per helpdesk: its OAuth token, encrypted (connector/tokens.py); never a plaintext secret.
    db["oauth_tokens"].create({
        "platform": str, "grant": str, "client_id": str, "key_id": str, "access_token": str, "refresh_token": str,
        "scope": str, "issued_at": float, "expires_at": float, "refresh_expires_at": float, "connected_at": float,
        "connected_as": str, "generation": int, "updated_at": float, "last_error": str, "last_error_at": float,
    }, pk="platform", not_null={"generation"}, defaults={"generation": 0}, if_not_exists=True)
    # Every helpdesk user Deskroute has acted as: their audit entries are Deskroute's own writes.
    db["oauth_users"].create({"platform": str, "user_id": str, "first_seen": float}, pk=("platform", "user_id"),
                             if_not_exists=True)
    # Named leases shared by every process: who may renew a token (and, later, run the scheduler).
    db["locks"].create({"name": str, "owner": str, "until": float}, pk="name", if_not_exists=True)



@migration
def m006_install_secrets_and_logins(db: Database) -> None:
    # Random secrets made once per install and shared by every process (the session-signing key).
    db["install_secrets"].create({"name": str, "value": str, "created_at": float}, pk="name", if_not_exists=True)
    # Recent failed admin logins per client address, shared by every process; pruned as it goes.
    db["login_failures"].create({"client": str, "failures": int, "last_at": float}, pk="client", if_not_exists=True)
    db["login_failures"].create_index(["last_at"], if_not_exists=True)
    if "text_purged_at" not in db["tickets"].columns_dict:  # retention: when this ticket's free text went
        db["tickets"].add_column("text_purged_at", float)


# Event states. Every accepted event ends in one of the last three.
PENDING, RUNNING, DONE, TRIAGE, DEAD = "pending", "running", "done", "triage", "dead"
PURGED_NOTE = "(note removed after the retention period)"
PURGED_TEXT = "(removed after the retention period)"
FINAL_STATES = (DONE, TRIAGE, DEAD)
# A ticket classified and recorded, deliberately not written back (DESKROUTE_SHADOW).
SHADOW = "shadow"


@dataclass
class Job:
    """A claimed event."""

    id: int
    platform: str
    kind: str
    ticket_id: str
    attempts: int
    received_at: float
    owner: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class TicketRecord:
    """What we know about a ticket we've seen: who owns its routing and how far it got."""

    platform: str
    ticket_id: str
    event_id: int
    state: str
    first_seen_at: float
    classification: Classification | None
    decision: RoutingDecision | None
    applied_at: float | None = None


class Store:
    """Deskroute's SQLite database."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time):
        self.path = str(path)
        self.clock = clock
        self._local = threading.local()

    @property
    def db(self) -> Database:
        """This thread's connection (sqlite3 connections must not be shared across threads)."""
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; WAL keeps it consistent
            conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            self._local.busy_ms = BUSY_MS
            # Checkpoints (copying the WAL into the database, with an fsync) take milliseconds. A background
            # thread runs them (start_checkpointer); this high mark is only a bound for processes without one.
            conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            conn.row_factory = sqlite3.Row
            db = Database(conn, execute_plugins=False)
            self._local.db = db
        return db

    def _execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        # fetchall() runs the statement to completion, so no write lock outlives this call. Concurrent
        # writers (threads or processes) wait in SQLite's busy handler; a Python lock in front of it was
        # measured slower: threads convoy on it and the GIL.
        return self.db.conn.execute(sql, params).fetchall()

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names of those applied now."""
        db = self.db
        applied = []
        # IMMEDIATE: one process migrates, the others wait for it and then find nothing to do.
        # sqlite-utils (>= 4) runs its DDL inside a transaction that is already open.
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            db["_migrations"].create({"number": int, "name": str, "applied_at": float}, pk="number",
                                     if_not_exists=True)
            done = {row["number"] for row in db["_migrations"].rows}
            for number, fn in enumerate(MIGRATIONS, start=1):
                if number not in done:
                    fn(db)
                    db.conn.execute("INSERT INTO _migrations (number, name, applied_at) VALUES (?, ?, ?)",
                                    (number, fn.__name__, self.clock()))
                    applied.append(fn.__name__)
            db.conn.execute("COMMIT")
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        return applied

    def start_checkpointer(self, interval: float = 1.0) -> threading.Thread:
        """Checkpoint the WAL every `interval` seconds on a daemon thread, so that no request pays for it."""

        def run() -> None:
            while True:
                time.sleep(interval)
                # Busy or briefly unavailable: the next round, or the autocheckpoint bound, catches up.
                with contextlib.suppress(sqlite3.Error):
                    self.db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        thread = threading.Thread(target=run, name="deskroute-checkpointer", daemon=True)
        thread.start()
        return thread

    def ping(self) -> None:
        """Raise if the database can't be read."""
        self._execute("SELECT 1")

    # --- events: the durable queue ---------------------------------------------------------

    def _busy(self, ms: int) -> None:
        """Set how long this thread's statements wait for a lock, from now on (a PRAGMA only when it changes).
        Web threads that take webhooks keep the short wait for their other queries too: they answer people."""
        db = self.db
        if self._local.busy_ms != ms:
            db.conn.execute(f"PRAGMA busy_timeout={int(ms)}")
            self._local.busy_ms = ms

    def insert_event(self, event: TicketEvent, *, now: float, busy_ms: int = BUSY_MS) -> tuple[int, bool]:
        """Store an event unless its dedup key is known; returns (event id, whether it was new)."""
        self._busy(busy_ms)
        data = event.model_dump(mode="json", exclude=_EVENT_COLUMNS, exclude_none=True)
        rows = self._execute(
            "INSERT INTO events (platform, kind, ticket_id, dedup_key, source_id, data, received_at, state, due_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (platform, dedup_key) DO NOTHING RETURNING id",
            (event.platform, event.kind, event.ticket_id, event.dedup_key, event.source_id,
             json.dumps(data) if data else None, now, PENDING, now))
        if rows:
            return rows[0]["id"], True
        existing = self._execute("SELECT id FROM events WHERE platform = ? AND dedup_key = ?",
                                 (event.platform, event.dedup_key))
        return existing[0]["id"], False

    def claim_event(self, *, owner: str, now: float, lease_until: float, max_attempts: int | None = None) -> Job | None:
        """Take the oldest due job: a pending one, or a running one whose lease has expired.

        A running job whose lease expired has lost its worker (killed, OOM). Once it has had
        `max_attempts`, the claim dead-letters it instead and takes the next: a job that keeps
        killing its worker dies itself. (An idle poll is the one statement it always was.)
        """
        while True:
            rows = self._execute(
                "UPDATE events SET state = ?, attempts = attempts + 1, lease_owner = ?, due_at = ? WHERE id = ("
                "  SELECT id FROM events WHERE state IN (?, ?) AND due_at <= ? ORDER BY due_at, id LIMIT 1"
                ") RETURNING id, platform, kind, ticket_id, attempts, received_at, data",
                (RUNNING, owner, lease_until, PENDING, RUNNING, now))
            if not rows:
                return None
            row = rows[0]
            job = Job(id=row["id"], platform=row["platform"], kind=row["kind"], ticket_id=row["ticket_id"],
                      attempts=row["attempts"], received_at=row["received_at"], owner=owner,
                      data=json.loads(row["data"] or "{}"))
            if max_attempts is None or job.attempts <= max_attempts:
                return job
            # Past the limit only when the last allowed attempt's lease ran out: its worker died.
            self._dead_letter_unrun(job, now=now)

    def _dead_letter_unrun(self, job: Job, *, now: float) -> None:
        """Dead-letter a job just claimed past its attempts (the claim didn't run it, so it doesn't count)."""
        error = f"worker died or lost its lease on attempt {job.attempts - 1}, the last allowed"
        self._execute("UPDATE events SET state = ?, attempts = attempts - 1, outcome = 'worker_died', last_error = ?,"
                      " finished_at = ?, lease_owner = NULL WHERE id = ? AND lease_owner = ?",
                      (DEAD, error, now, job.id, job.owner))
        self._execute("UPDATE tickets SET state = ?, applied_at = ?, last_error = ? WHERE platform = ?"
                      " AND ticket_id = ? AND event_id = ? AND state NOT IN (?, ?, ?)",
                      (DEAD, now, error, job.platform, job.ticket_id, job.id, DONE, TRIAGE, SHADOW))
        log.error("job dead-lettered", extra={"event_id": job.id, "ticket_id": job.ticket_id, "why": error})

    def extend_lease(self, job: Job, *, until: float) -> bool:
        """Keep a long job ours; False if the lease was lost."""
        rows = self._execute("UPDATE events SET due_at = ? WHERE id = ? AND lease_owner = ? AND state = ? RETURNING id",
                             (until, job.id, job.owner, RUNNING))
        return bool(rows)

    def finish_event(self, job: Job, *, state: str, outcome: str, error: str | None, now: float) -> bool:
        """Record a final state; False if another worker holds the job now (our lease expired)."""
        assert state in FINAL_STATES
        rows = self._execute(
            "UPDATE events SET state = ?, outcome = ?, last_error = ?, finished_at = ?, lease_owner = NULL"
            " WHERE id = ? AND lease_owner = ? AND state = ? RETURNING id",
            (state, outcome, error, now, job.id, job.owner, RUNNING))
        return bool(rows)

    def reschedule_event(self, job: Job, *, due_at: float, error: str) -> bool:
        """Put a job back for a later attempt; False if the lease was lost."""
        rows = self._execute(
            "UPDATE events SET state = ?, due_at = ?, last_error = ?, lease_owner = NULL"
            " WHERE id = ? AND lease_owner = ? AND state = ? RETURNING id",
            (PENDING, due_at, error, job.id, job.owner, RUNNING))
        return bool(rows)

    def event(self, event_id: int) -> dict[str, Any]:
        """One event row, for tests, the CLI and the admin UI."""
        rows = self._execute("SELECT * FROM events WHERE id = ?", (event_id,))
        if not rows:
            raise KeyError(event_id)
        return dict(rows[0])

    def events(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Most recent events first, optionally in one state."""
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        return [dict(r) for r in self._execute(f"SELECT * FROM events {where} ORDER BY id DESC LIMIT ?",
                                               (*params, limit))]

    def queue_health(self, *, now: float) -> dict[str, Any]:
        """Counts by state and the age of the oldest job still waiting."""
        counts = {r["state"]: r["n"] for r in self._execute("SELECT state, count(*) AS n FROM events GROUP BY state")}
        oldest = self._execute("SELECT min(received_at) AS t FROM events WHERE state IN (?, ?)", (PENDING, RUNNING))
        t = oldest[0]["t"]
        return {"counts": counts, "oldest_waiting_seconds": round(now - t, 3) if t is not None else None}

    # --- tickets: the classify-once gate and the decision record -------------------------------

    def claim_ticket(self, *, platform: str, ticket_id: str, event_id: int, now: float) -> TicketRecord:
        """The first event to get here owns the ticket's routing; later ones see the existing record."""
        self._execute(
            "INSERT INTO tickets (platform, ticket_id, event_id, first_seen_at, state) VALUES (?, ?, ?, ?, 'new')"
            " ON CONFLICT (platform, ticket_id) DO NOTHING", (platform, ticket_id, event_id, now))
        record = self.ticket(platform, ticket_id)
        assert record is not None
        return record

    def ticket(self, platform: str, ticket_id: str) -> TicketRecord | None:
        """The ticket's record, if we've seen it."""
        rows = self._execute("SELECT * FROM tickets WHERE platform = ? AND ticket_id = ?", (platform, ticket_id))
        if not rows:
            return None
        row = rows[0]
        return TicketRecord(
            platform=row["platform"], ticket_id=row["ticket_id"], event_id=row["event_id"], state=row["state"],
            first_seen_at=row["first_seen_at"],
            classification=Classification.model_validate_json(row["classification"]) if row["classification"] else None,
            decision=RoutingDecision.model_validate_json(row["decision"]) if row["decision"] else None,
            applied_at=row["applied_at"],
        )

    def save_decision(self, record: TicketRecord, *, classification: Classification, decision: RoutingDecision,
                      now: float, training_text: str | None = None) -> None:
        """Record the one classification this ticket will ever get, and what its LLM calls cost."""
        self._execute(
            "UPDATE tickets SET state = 'decided', category = ?, confidence = ?, tier = ?, guardrail = ?, group_id = ?,"
            " priority = ?, triage = ?, classification = ?, decision = ?, model_version = ?, decided_at = ?,"
            " prompt_version = ?, training_text = ?, text_purged_at = NULL"
            " WHERE platform = ? AND ticket_id = ? AND event_id = ?",
            (classification.category, classification.confidence, classification.tier, classification.guardrail,
             decision.group_id, decision.priority, int(decision.triage), classification.model_dump_json(),
             decision.model_dump_json(), classification.model_version, now, classification.prompt_version,
             training_text, record.platform, record.ticket_id, record.event_id))
        self.record_llm_calls(classification, platform=record.platform, ticket_id=record.ticket_id, now=now)
        record.state, record.classification, record.decision = "decided", classification, decision

    def record_llm_calls(self, classification: Classification, *, platform: str | None, ticket_id: str | None,
                         now: float) -> None:
        """Keep the usage of every Claude call made for a classification."""
        for call in classification.llm_calls:
            self._execute(
                "INSERT INTO llm_calls (at, platform, ticket_id, model, outcome, prompt_version, latency_ms,"
                " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, platform, ticket_id, call.model, call.outcome, classification.prompt_version, call.latency_ms,
                 call.input_tokens, call.output_tokens, call.cache_read_tokens, call.cache_write_tokens,
                 call.cost_usd, call.error))

    def llm_usage(self) -> list[sqlite3.Row]:
        """Claude calls, tokens and estimated cost by model and outcome."""
        return self._execute(
            "SELECT model, outcome, count(*) AS calls, sum(input_tokens) AS input_tokens,"
            " sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens,"
            " sum(cache_write_tokens) AS cache_write_tokens, sum(coalesce(cost_usd, 0)) AS cost_usd"
            " FROM llm_calls GROUP BY model, outcome")

    def distillable(self, *, min_confidence: float, decided_before: float) -> list[tuple[str, str, float]]:
        """(redacted text, category, decided at) of confident Claude decisions no one moved to another group."""
        rows = self._execute(
            "SELECT t.training_text, t.category, t.decided_at FROM tickets t"
            " WHERE t.tier = 'llm' AND t.category IS NOT NULL AND t.training_text IS NOT NULL"
            " AND t.confidence >= ? AND t.decided_at <= ? AND t.state = 'done'"
            # Conservative: any recorded move to another group, a correction or not, disqualifies it.
            " AND NOT EXISTS (SELECT 1 FROM group_changes g WHERE g.platform = t.platform"
            "   AND g.ticket_id = t.ticket_id AND g.group_id IS NOT NULL AND g.group_id != t.group_id)"
            " AND NOT EXISTS (SELECT 1 FROM corrections c WHERE c.platform = t.platform AND c.ticket_id = t.ticket_id)"
            " ORDER BY t.decided_at", (min_confidence, decided_before))
        return [(r["training_text"], r["category"], r["decided_at"]) for r in rows]

    def replace_decision(self, record: TicketRecord, decision: RoutingDecision, *, error: str) -> None:
        """Swap in a fallback decision (triage) after the helpdesk refused the first one."""
        self._execute(
            "UPDATE tickets SET decision = ?, group_id = ?, priority = ?, triage = ?, last_error = ?"
            " WHERE platform = ? AND ticket_id = ?",
            (decision.model_dump_json(), decision.group_id, decision.priority, int(decision.triage), error,
             record.platform, record.ticket_id))
        record.decision = decision

    def finish_ticket(self, record: TicketRecord, *, state: str, now: float, error: str | None = None) -> None:
        """Mark the routing written (done/triage), recorded only (shadow), or given up (dead)."""
        self._execute("UPDATE tickets SET state = ?, applied_at = ?, last_error = coalesce(?, last_error)"
                      " WHERE platform = ? AND ticket_id = ?",
                      (state, now, error, record.platform, record.ticket_id))
        record.state, record.applied_at = state, now

    # --- group changes (kept for corrections) ---------------------------------------------------

    def add_group_change(self, job: Job, *, now: float) -> None:
        """Keep a group-change event; idempotent per event."""
        d = job.data
        self._execute(
            "INSERT INTO group_changes (event_id, platform, ticket_id, group_id, previous_group_id, actor_id, via,"
            " occurred_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            (job.id, job.platform, job.ticket_id, d.get("group_id"), d.get("previous_group_id"), d.get("actor_id"),
             d.get("via"), d.get("occurred_at"), now))

    def group_changes(self, platform: str, ticket_id: str) -> list[dict[str, Any]]:
        """A ticket's group changes, oldest first."""
        return [dict(r) for r in self._execute(
            "SELECT * FROM group_changes WHERE platform = ? AND ticket_id = ? ORDER BY id", (platform, ticket_id))]

    # --- corrections -------------------------------------------------------------------------

    def add_correction(self, row: dict[str, Any]) -> bool:
        """Keep one re-route; False if this change was already recorded."""
        columns = ", ".join(row)
        rows = self._execute(
            f"INSERT INTO corrections ({columns}) VALUES ({', '.join('?' * len(row))})"
            " ON CONFLICT (platform, ticket_id, change_id) DO NOTHING RETURNING id", tuple(row.values()))
        return bool(rows)

    def corrections_for(self, platform: str, ticket_id: str) -> list[dict[str, Any]]:
        """A ticket's re-routes, in order."""
        return [dict(r) for r in self._execute(
            "SELECT * FROM corrections WHERE platform = ? AND ticket_id = ? ORDER BY seq", (platform, ticket_id))]

    def corrections(self, *, since: float | None = None, until: float | None = None, category: str | None = None,
                    status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Re-routes, oldest first, each with `final_category` (the chain's last group) and `is_final`.

        `category` matches the predicted or the corrected category.
        """
        where, params = ["1 = 1"], []
        for clause, value in (("c.rerouted_at >= ?", since), ("c.rerouted_at < ?", until), ("c.status = ?", status)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if category is not None:
            where.append("(c.predicted_category = ? OR c.corrected_category = ? OR c.label = ?)")
            params += [category] * 3
        sql = (
            "SELECT c.*, last.corrected_category AS final_category, c.seq = last.seq AS is_final"
            " FROM corrections c JOIN corrections last ON last.platform = c.platform AND last.ticket_id = c.ticket_id"
            "  AND last.seq = (SELECT max(seq) FROM corrections m WHERE m.platform = c.platform"
            "                  AND m.ticket_id = c.ticket_id)"
            f" WHERE {' AND '.join(where)} ORDER BY c.rerouted_at, c.id")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [dict(r) for r in self._execute(sql, tuple(params))]

    def review_correction(self, correction_id: int, *, status: str, reviewer: str, now: float,
                          label: str | None = None) -> bool:
        """Accept or reject a correction (optionally with the label to learn); False if there is no such id."""
        rows = self._execute(
            "UPDATE corrections SET status = ?, reviewed_by = ?, reviewed_at = ?, label = coalesce(?, label)"
            " WHERE id = ? RETURNING id", (status, reviewer, now, label, correction_id))
        return bool(rows)

    def accepted_corrections(self) -> list[tuple[str, str, float]]:
        """(text, label, reviewed at) of accepted corrections that end their ticket's chain and have text."""
        rows = self._execute(
            "SELECT c.text, coalesce(c.label, c.corrected_category) AS label, c.reviewed_at FROM corrections c"
            " WHERE c.status = 'accepted' AND c.text IS NOT NULL"
            " AND c.seq = (SELECT max(seq) FROM corrections m WHERE m.platform = c.platform"
            "              AND m.ticket_id = c.ticket_id) ORDER BY c.id")
        return [(r["text"], r["label"], r["reviewed_at"]) for r in rows]

    def tickets_to_check(self, *, routed_after: float, checked_before: float, limit: int) -> list[tuple[str, str]]:
        """Recently routed tickets whose re-routes were looked for least recently."""
        rows = self._execute(
            "SELECT platform, ticket_id FROM tickets WHERE state IN (?, ?) AND applied_at >= ?"
            " AND coalesce(reroute_checked_at, applied_at) < ?"
            " ORDER BY coalesce(reroute_checked_at, applied_at) LIMIT ?",
            (DONE, TRIAGE, routed_after, checked_before, limit))
        return [(r["platform"], r["ticket_id"]) for r in rows]

    def mark_checked(self, platform: str, ticket_id: str, *, now: float) -> None:
        """Remember when a ticket's re-routes were last looked for."""
        self._execute("UPDATE tickets SET reroute_checked_at = ? WHERE platform = ? AND ticket_id = ?",
                      (now, platform, ticket_id))

    def accuracy(self, *, now: float, within_hours: float, days: float) -> list[dict[str, Any]]:
        """Per category: tickets routed in the last `days` (old enough to judge), and how many agents
        moved within `within_hours` of routing."""
        rows = self._execute(
            "SELECT t.platform, t.category, count(*) AS routed, sum(EXISTS (SELECT 1 FROM corrections c"
            "  WHERE c.platform = t.platform AND c.ticket_id = t.ticket_id"
            "  AND c.rerouted_at <= t.applied_at + ?)) AS rerouted"
            " FROM tickets t WHERE t.state = ? AND t.category IS NOT NULL"
            " AND t.applied_at >= ? AND t.applied_at <= ? GROUP BY t.platform, t.category ORDER BY t.category",
            (within_hours * 3600, DONE, now - days * 86400, now - within_hours * 3600))
        return [{**dict(r), "accuracy": 1 - r["rerouted"] / r["routed"]} for r in rows]

    # --- the admin UI's views ------------------------------------------------------------------

    def overview(self, *, since: float) -> dict[str, Any]:
        """Counts since a time: tickets decided, by tier, triage share, processing latency, Claude cost."""
        tiers = {r["tier"]: r["n"] for r in self._execute(
            "SELECT tier, count(*) AS n FROM tickets WHERE decided_at >= ? GROUP BY tier", (since,))}
        latencies = [r["s"] for r in self._execute(
            "SELECT finished_at - received_at AS s FROM events WHERE finished_at >= ? AND kind = 'ticket.created'"
            " ORDER BY s", (since,))]
        cost = self._execute("SELECT coalesce(sum(cost_usd), 0) AS usd, count(*) AS calls FROM llm_calls"
                             " WHERE at >= ?", (since,))[0]
        total = sum(tiers.values())

        def pct(q: float) -> float | None:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

        return {"tickets": total, "by_tier": tiers, "triage_rate": tiers.get("triage", 0) / total if total else None,
                "p50_seconds": pct(0.5), "p95_seconds": pct(0.95), "llm_cost_usd": cost["usd"],
                "llm_calls": cost["calls"]}

    def category_mix(self, *, since: float) -> list[tuple[str, str, int]]:
        """(UTC day, category or "triage", tickets) decided since a time."""
        rows = self._execute(
            "SELECT date(decided_at, 'unixepoch') AS day, coalesce(category, 'triage') AS category, count(*) AS n"
            " FROM tickets WHERE decided_at >= ? GROUP BY day, category ORDER BY day", (since,))
        return [(r["day"], r["category"], r["n"]) for r in rows]

    def recent_tickets(self, *, search: str = "", state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Recent decisions, newest first, with the event's state and whether an agent re-routed the ticket."""
        where, params = ["1 = 1"], []
        if search:
            where.append("(t.ticket_id = ? OR t.category LIKE ? OR t.tier = ? OR t.decision LIKE ?)")
            params += [search, f"%{search}%", search, f"%{search}%"]
        if state:
            where.append("(t.state = ? OR e.state = ?)")
            params += [state, state]
        rows = self._execute(
            "SELECT t.platform, t.ticket_id, t.state, t.category, t.confidence, t.tier, t.guardrail, t.decided_at,"
            " t.decision, t.last_error, e.id AS event_id, e.state AS event_state, e.last_error AS event_error,"
            " EXISTS (SELECT 1 FROM corrections c WHERE c.platform = t.platform AND c.ticket_id = t.ticket_id)"
            " AS rerouted FROM tickets t LEFT JOIN events e ON e.id = t.event_id"
            f" WHERE {' AND '.join(where)} ORDER BY t.first_seen_at DESC LIMIT ?", (*params, limit))
        return [dict(r) for r in rows]

    def requeue(self, event_id: int, *, now: float, reclassify: bool = False) -> bool:
        """Send a finished (dead, triage) job through the pipeline again; with reclassify, forget its decision."""
        rows = self._execute(
            "UPDATE events SET state = ?, due_at = ?, attempts = 0, outcome = NULL, last_error = NULL,"
            " finished_at = NULL, lease_owner = NULL WHERE id = ? AND state IN (?, ?, ?) RETURNING platform, ticket_id",
            (PENDING, now, event_id, DEAD, TRIAGE, DONE))
        if not rows:
            return False
        if reclassify:
            self._execute(
                "UPDATE tickets SET state = 'new', classification = NULL, decision = NULL, category = NULL,"
                " confidence = NULL, tier = NULL, guardrail = NULL, decided_at = NULL"
                " WHERE platform = ? AND ticket_id = ? AND event_id = ?",
                (rows[0]["platform"], rows[0]["ticket_id"], event_id))
        else:
            self._execute("UPDATE tickets SET state = CASE WHEN decision IS NULL THEN 'new' ELSE 'decided' END"
                          " WHERE platform = ? AND ticket_id = ? AND event_id = ?",
                          (rows[0]["platform"], rows[0]["ticket_id"], event_id))
        return True

    # --- configuration history ----------------------------------------------------------------

    def add_config_change(self, *, at: float, author: str, file: str, summary: str, diff: str) -> None:
        """Record an edit to mappings/ made through the admin UI."""
        self._execute("INSERT INTO config_changes (at, author, file, summary, diff) VALUES (?, ?, ?, ?, ?)",
                      (at, author, file, summary, diff))

    def config_changes(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent edits, newest first."""
        return [dict(r) for r in self._execute("SELECT * FROM config_changes ORDER BY id DESC LIMIT ?", (limit,))]

    # --- OAuth tokens and locks -----------------------------------------------------------------

    _TOKEN_COLUMNS = ("grant", "client_id", "key_id", "access_token", "refresh_token", "scope", "issued_at",
                      "expires_at", "refresh_expires_at", "connected_at", "connected_as")

    def oauth_token(self, platform: str) -> dict[str, Any] | None:
        """The helpdesk's token row (ciphertexts), or None."""
        rows = self._execute("SELECT * FROM oauth_tokens WHERE platform = ?", (platform,))
        return dict(rows[0]) if rows else None

    def save_oauth_token(self, platform: str, fields: dict[str, Any], *, replaces: int | None, now: float,
                         force: bool = False) -> bool:
        """Store a new token, unless someone else stored one since we read generation `replaces`
        (None: we saw no token); `force` replaces whatever is there (an admin just connected).
        Clears the recorded error."""
        values = tuple(fields[c] for c in self._TOKEN_COLUMNS)
        assignments = ", ".join(f"{c} = excluded.{c}" for c in self._TOKEN_COLUMNS)
        if force:
            unchanged, params = "1 = 1", ()
        elif replaces is None:
            unchanged, params = "oauth_tokens.access_token IS NULL", ()
        else:
            unchanged, params = "oauth_tokens.generation = ?", (replaces,)
        rows = self._execute(
            f"INSERT INTO oauth_tokens (platform, {', '.join(self._TOKEN_COLUMNS)}, generation, updated_at)"
            f" VALUES (?, {', '.join('?' * len(values))}, 1, ?) ON CONFLICT (platform) DO UPDATE SET {assignments},"
            " generation = oauth_tokens.generation + 1, updated_at = excluded.updated_at, last_error = NULL,"
            f" last_error_at = NULL WHERE {unchanged} RETURNING generation",
            (platform, *values, now, *params))
        return bool(rows)

    def add_oauth_user(self, platform: str, user_id: str, *, now: float) -> None:
        """Remember a helpdesk user Deskroute has acted as."""
        self._execute("INSERT INTO oauth_users (platform, user_id, first_seen) VALUES (?, ?, ?)"
                      " ON CONFLICT DO NOTHING", (platform, user_id, now))

    def oauth_users(self, platform: str) -> set[str]:
        """Every helpdesk user Deskroute has acted as."""
        return {r["user_id"] for r in self._execute("SELECT user_id FROM oauth_users WHERE platform = ?", (platform,))}

    def clear_oauth_token(self, platform: str, *, now: float) -> None:
        """Forget the token (Disconnect, or a key that can no longer decrypt it)."""
        blank = ", ".join(f"{c} = NULL" for c in self._TOKEN_COLUMNS)
        self._execute(f"UPDATE oauth_tokens SET {blank}, generation = generation + 1, updated_at = ?,"
                      " last_error = NULL, last_error_at = NULL WHERE platform = ?", (now, platform))

    def record_oauth_error(self, platform: str, error: str | None, *, now: float) -> None:
        """Note (None: clear) why the helpdesk's auth is failing."""
        self._execute("INSERT INTO oauth_tokens (platform, last_error, last_error_at, generation, updated_at)"
                      " VALUES (?, ?, ?, 0, ?) ON CONFLICT (platform) DO UPDATE SET last_error = excluded.last_error,"
                      " last_error_at = excluded.last_error_at", (platform, error, now if error else None, now))

    def try_lock(self, name: str, owner: str, *, until: float, now: float) -> bool:
        """Take (or extend) a named lease shared by every process; False while another owner holds it."""
        rows = self._execute(
            "INSERT INTO locks (name, owner, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
            " SET owner = excluded.owner, until = excluded.until WHERE locks.until < ? OR locks.owner = excluded.owner"
            " RETURNING name", (name, owner, until, now))
        return bool(rows)

    def unlock(self, name: str, owner: str) -> None:
        """Give a lease up early, if it is still ours."""
        self._execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, owner))

    # --- install secrets and the login throttle ------------------------------------------------

    def install_secret(self, name: str, make: Callable[[], str]) -> str:
        """A secret made once for the whole install (the first process to ask makes it; the rest read it)."""
        self._execute("INSERT INTO install_secrets (name, value, created_at) VALUES (?, ?, ?)"
                      " ON CONFLICT (name) DO NOTHING", (name, make(), self.clock()))
        return str(self._execute("SELECT value FROM install_secrets WHERE name = ?", (name,))[0]["value"])

    def login_attempt(self, client: str, *, now: float, free: int, max_delay: float, window: float,
                      keep: int) -> bool:
        """Count a login attempt from `client` as failed until it succeeds, if its delay has passed; False if
        it must wait. One statement: parallel attempts can't all slip through before any is counted.
        After `free` failures, each waits 2, 4, 8... seconds (at most `max_delay`) after the last one."""
        self._execute("DELETE FROM login_failures WHERE last_at < ?", (now - window,))
        rows = self._execute(
            "INSERT INTO login_failures (client, failures, last_at) VALUES (?, 1, ?) ON CONFLICT (client) DO UPDATE"
            " SET failures = login_failures.failures + 1, last_at = excluded.last_at"
            " WHERE login_failures.failures < ? OR login_failures.last_at"
            "   + min(?, 1 << min(login_failures.failures - ? + 1, 30)) <= excluded.last_at"
            " RETURNING failures", (client, now, free, max_delay, free))
        self._execute("DELETE FROM login_failures WHERE client IN (SELECT client FROM login_failures"
                      " ORDER BY last_at DESC LIMIT -1 OFFSET ?)", (keep,))
        return bool(rows)

    def login_failures(self, client: str, *, since: float) -> tuple[int, float]:
        """(failed logins from `client` since a time, when the last was)."""
        rows = self._execute("SELECT failures, last_at FROM login_failures WHERE client = ? AND last_at >= ?",
                             (client, since))
        return (int(rows[0]["failures"]), float(rows[0]["last_at"])) if rows else (0, 0.0)

    def login_succeeded(self, client: str) -> None:
        self._execute("DELETE FROM login_failures WHERE client = ?", (client,))

    # --- retention ------------------------------------------------------------------------------

    def purge_text(self, before: float) -> dict[str, int]:
        """Forget ticket text older than `before` (seconds since the epoch): the redacted distillation
        text, every free text Claude wrote (its summary, its reasons, the note that quoted them), and
        imported history's text. Corrections keep their redacted text: they are the feedback dataset
        team leads review. Categories, confidences and tiers stay, for the record."""
        rows = self._execute(
            "SELECT platform, ticket_id, classification, decision FROM tickets WHERE coalesce(decided_at, 0) < ?"
            " AND text_purged_at IS NULL AND (training_text IS NOT NULL OR classification IS NOT NULL"
            " OR decision IS NOT NULL)", (before,))
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
            self._execute(
                "UPDATE tickets SET training_text = NULL, classification = ?, decision = ?, text_purged_at = ?"
                " WHERE platform = ? AND ticket_id = ?",
                (json.dumps(classification) if classification is not None else None,
                 json.dumps(decision) if decision is not None else None, self.clock(), row["platform"],
                 row["ticket_id"]))
        history = self._execute("UPDATE history SET text = NULL WHERE imported_at < ? AND text IS NOT NULL"
                                " RETURNING ticket_id", (before,))
        return {"tickets": len(rows), "history": len(history)}

    # --- history (imported solved tickets) -------------------------------------------------------

    def add_history(self, rows: list[dict[str, Any]]) -> int:
        """Keep imported tickets (a later import of the same ticket replaces it); returns how many."""
        for row in rows:
            self._execute(
                "INSERT INTO history (platform, ticket_id, text, category, group_id, solved_at, imported_at)"
                " VALUES (:platform, :ticket_id, :text, :category, :group_id, :solved_at, :imported_at)"
                " ON CONFLICT (platform, ticket_id) DO UPDATE SET text = excluded.text, category = excluded.category,"
                " group_id = excluded.group_id, solved_at = excluded.solved_at, imported_at = excluded.imported_at",
                row)
        return len(rows)

    def history(self) -> list[tuple[str, str, float]]:
        """(text, category, imported at) of every imported ticket."""
        rows = self._execute("SELECT text, category, imported_at FROM history ORDER BY rowid")
        return [(r["text"], r["category"], r["imported_at"]) for r in rows]

    # --- models --------------------------------------------------------------------------------

    def save_model(self, *, blob: bytes, labels: list[str], n_examples: int, metrics: dict[str, Any], source: str,
                   sha256: str, activate: bool, now: float) -> int:
        """Keep a trained model; with activate, it becomes the one the router uses."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")  # deactivate the old and insert the new as one change
        try:
            if activate:
                conn.execute("UPDATE models SET active = 0 WHERE active = 1")
            cursor = conn.execute(
                "INSERT INTO models (created_at, labels, n_examples, metrics, source, sha256, blob, active)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (now, json.dumps(labels), n_examples, json.dumps(metrics), source, sha256, blob, int(activate)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def prune_models(self, keep: int, keep_refused: int = 3) -> list[int]:
        """Delete models beyond the newest `keep` that were not refused, and the newest `keep_refused`
        refused candidates (never the active one): each holds its vocabulary. Refused candidates don't
        push out the versions a rollback needs."""
        refused = "source LIKE '%(refused)' OR source LIKE '%(not promoted%'"
        rows = self._execute(
            "DELETE FROM models WHERE active = 0 AND version NOT IN"
            f" (SELECT version FROM models WHERE NOT ({refused}) ORDER BY version DESC LIMIT ?) AND version NOT IN"
            f" (SELECT version FROM models WHERE {refused} ORDER BY version DESC LIMIT ?) RETURNING version",
            (keep, keep_refused))
        return sorted(r["version"] for r in rows)

    def activate_model(self, version: int) -> None:
        """Make a stored model the one the router uses."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchall():
                raise KeyError(version)
            conn.execute("UPDATE models SET active = 0 WHERE active = 1")
            conn.execute("UPDATE models SET active = 1 WHERE version = ?", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def active_model_version(self) -> int | None:
        """The version the router should be using, or None before the first training."""
        rows = self._execute("SELECT version FROM models WHERE active = 1")
        return rows[0]["version"] if rows else None

    def model_blob(self, version: int) -> bytes:
        """A stored model's bytes."""
        rows = self._execute("SELECT blob FROM models WHERE version = ?", (version,))
        if not rows:
            raise KeyError(version)
        return rows[0]["blob"]

    def model_info(self, version: int) -> dict[str, Any]:
        """One stored model's metadata."""
        for info in self.models():
            if info["version"] == version:
                return info
        raise KeyError(version)

    def models(self) -> list[dict[str, Any]]:
        """Every stored model's metadata, newest first."""
        rows = self._execute("SELECT version, created_at, labels, n_examples, metrics, source, sha256, active"
                             " FROM models ORDER BY version DESC")
        return [{**dict(r), "labels": json.loads(r["labels"]), "metrics": json.loads(r["metrics"])} for r in rows]

    # --- metrics -------------------------------------------------------------------------------

    def event_counts(self) -> Iterator[sqlite3.Row]:
        """Accepted events by platform, kind, state and outcome."""
        return iter(self._execute("SELECT platform, kind, state, outcome, count(*) AS n FROM events"
                                  " GROUP BY platform, kind, state, outcome"))

    def decision_counts(self) -> Iterator[sqlite3.Row]:
        """Decided tickets by platform and tier."""
        return iter(self._execute("SELECT platform, tier, count(*) AS n FROM tickets WHERE tier IS NOT NULL"
                                  " GROUP BY platform, tier"))

    def latency_histogram(self, buckets: tuple[float, ...]) -> tuple[list[int], float, int]:
        """Cumulative counts of received-to-finished seconds per bucket, their sum, and the count."""
        cases = ", ".join(f"sum(finished_at - received_at <= {float(b)!r})" for b in buckets)
        row = self._execute(f"SELECT {cases}, sum(finished_at - received_at), count(*) FROM events"
                            " WHERE finished_at IS NOT NULL")[0]
        values = list(row)
        return [int(v or 0) for v in values[:len(buckets)]], float(values[-2] or 0.0), int(values[-1])
