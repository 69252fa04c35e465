"""The SQLite schema's history before Alembic (migrations m001 to m006, applied with sqlite-utils).

A database file made by an older Deskroute records them in `_migrations`. `upgrade()` brings such a
file to m006, which is exactly Alembic's first revision (0001), so it can be stamped and go on from
there. New installs, and every PostgreSQL one, start at 0001 and never run this.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from sqlite_utils import Database

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


def upgrade(path: str) -> bool:
    """Bring a pre-Alembic SQLite file to m006; False if the file has no `_migrations` (not such a file)."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db = Database(conn, execute_plugins=False)
        if "_migrations" not in db.table_names():
            return False
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = {row["number"] for row in db["_migrations"].rows}
            for number, fn in enumerate(MIGRATIONS, start=1):
                if number not in done:
                    fn(db)
                    conn.execute("INSERT INTO _migrations (number, name, applied_at) VALUES (?, ?, ?)",
                                 (number, fn.__name__, time.time()))
                    log.info("legacy migration applied", extra={"migration": fn.__name__})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return True
    finally:
        conn.close()
