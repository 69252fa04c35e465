"""The baseline for bench/ingest.py: a bare Flask handler that parses JSON and inserts a row into SQLite.

Same SQLite settings as Deskroute's store (WAL, synchronous=NORMAL, one connection per thread), so the
comparison measures what Deskroute adds: signature checks, validation, de-duplication, logging, metrics.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading

from flask import Flask, request

_local = threading.local()


def _db() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ["BASELINE_DB"], timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body TEXT)")
        _local.conn = conn
    return conn


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/zendesk")
    def receive() -> tuple[str, int]:
        payload = json.loads(request.get_data())
        _db().execute("INSERT INTO events (body) VALUES (?)", (json.dumps(payload),))
        return "", 202

    return app
