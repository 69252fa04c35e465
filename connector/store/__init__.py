"""The only package that touches the database: SQLite by default, PostgreSQL for several machines.

`Store` is the door: one `Database` (an engine for DATABASE_URL) and one part per kind of record,
each in its own module: `events` (the durable queue), `tickets` (decisions, group changes, Claude
calls), `corrections` (re-routes and imported history), `models` and `retrains` (trained.py), `configs`,
`auth` (tokens, secrets, logins, leases), `users` (who signs in to the admin UI by name), `suggestions`
(tickets no category took, and the clusters found in them), `retention` and `stats`. Parts return plain
dataclasses or dicts, and every "can't reach the database" error is a StoreUnavailable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from connector.store import migrate as migrations
from connector.store.auth import Auth
from connector.store.configs import Configs, ConfigVersion
from connector.store.corrections import Corrections
from connector.store.db import BUSY_MS, WEBHOOK_BUSY_MS, Database, StoreUnavailable
from connector.store.events import ClaimedEvent, Events, QueueHealth
from connector.store.retention import PURGED_NOTE, PURGED_TEXT, Retention
from connector.store.stats import Stats
from connector.store.suggestions import Suggestions
from connector.store.tickets import TicketRecord, Tickets
from connector.store.trained import ModelInfo, Models, RetrainRecord, Retrains
from connector.store.users import AdminUser, Users

__all__ = ["BUSY_MS", "PURGED_NOTE", "PURGED_TEXT", "WEBHOOK_BUSY_MS", "AdminUser", "ClaimedEvent", "ConfigVersion",
           "ModelInfo", "QueueHealth", "RetrainRecord", "Store", "StoreUnavailable", "TicketRecord"]


class Store:
    """Deskroute's database, for `DATABASE_URL` (or a SQLite file's path)."""

    def __init__(self, url: str | Path, *, clock: Callable[[], float] | None = None,
                 host_time: Callable[[], float] = time.time):
        # clock None: real time, the database server's on PostgreSQL (host_time: this host's clock, for tests)
        self.db = Database(url, clock=clock, host_time=host_time)
        self.events = Events(self.db)
        self.tickets = Tickets(self.db)
        self.corrections = Corrections(self.db)
        self.models = Models(self.db)
        self.retrains = Retrains(self.db)
        self.configs = Configs(self.db)
        self.auth = Auth(self.db)
        self.users = Users(self.db)
        self.suggestions = Suggestions(self.db)
        self.retention = Retention(self.db)
        self.stats = Stats(self.db)

    @property
    def clock(self) -> Callable[[], float]:
        return self.db.clock

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql"."""
        return self.db.dialect

    @property
    def path(self) -> str:
        """The SQLite file (empty on PostgreSQL)."""
        return self.db.path if self.db.sqlite else ""

    def describe(self) -> str:
        """Where the data is, without the password: for logs and `doctor`."""
        url = self.db.url.difference_update_query(["password"])  # a password given as ?password= too
        return url.render_as_string(hide_password=True)

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the revisions applied now."""
        return migrations.upgrade(self.db)

    def ping(self) -> None:
        """Raise StoreUnavailable if the database can't be read."""
        self.db.ping()

    def start_checkpointer(self, interval: float = 1.0) -> threading.Thread | None:
        """SQLite: move the WAL into the database on a background thread (no-op on PostgreSQL)."""
        return self.db.start_checkpointer(interval)

    def close(self) -> None:
        self.db.dispose()
