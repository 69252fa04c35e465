"""The baseline for bench/ingest.py: a bare Flask handler that parses JSON and inserts a row.

SQLite (BASELINE_DB, a file): the same settings as Deskroute's store (WAL, synchronous=NORMAL, one
connection per thread).

PostgreSQL (BASELINE_DATABASE_URL, a postgresql:// URL): psycopg 3 directly, one connection per thread
(gunicorn's sync workers: one per process), autocommit, and per request one
`INSERT ... ON CONFLICT (dedup_key) DO NOTHING`: the same durable write Deskroute's intake makes (a
committed insert, de-duplicated by a unique key, with the server's synchronous_commit), without the
rest of Deskroute's row (state, due_at and their index) or its NOTIFY trigger. `create_schema` makes
the table; bench/ingest.py calls it before the server starts.

Either way the comparison measures what Deskroute adds: signature checks, validation, de-duplication,
logging, metrics, its queue row.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Any

from flask import Flask, request

_local = threading.local()
PG_SCHEMA = "CREATE TABLE IF NOT EXISTS events (id BIGSERIAL PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, body TEXT)"


def _db() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ["BASELINE_DB"], timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body TEXT)")
        _local.conn = conn
    return conn


def _pg() -> Any:
    import psycopg

    conn = getattr(_local, "pg", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["BASELINE_DATABASE_URL"], autocommit=True)
        _local.pg = conn
    return conn


def create_schema(url: str) -> None:
    """The PostgreSQL baseline's table."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PG_SCHEMA)


def create_app() -> Flask:
    app = Flask(__name__)
    postgres = bool(os.environ.get("BASELINE_DATABASE_URL"))

    @app.post("/webhooks/zendesk")
    def receive() -> tuple[str, int]:
        payload = json.loads(request.get_data())
        if postgres:
            _pg().execute("INSERT INTO events (dedup_key, body) VALUES (%s, %s) ON CONFLICT (dedup_key) DO NOTHING",
                          (f"ticket.created:{payload['ticket_id']}", json.dumps(payload)))
        else:
            _db().execute("INSERT INTO events (body) VALUES (?)", (json.dumps(payload),))
        return "", 202

    return app
