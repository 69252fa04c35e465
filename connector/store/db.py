"""The connection to the database, SQLite or PostgreSQL, through SQLAlchemy Core.

Statements run in autocommit mode: each is its own transaction, and every write that must be atomic
is one statement (`UPDATE ... RETURNING`, `INSERT ... ON CONFLICT`), so no transaction stays open
across Python code. The few multi-statement changes use `transaction()`.

SQLite runs in WAL mode with a busy timeout, so that web and worker processes on one machine write at
once. PostgreSQL goes through psycopg 3 with SQLAlchemy's connection pool; a dead server or a pool
that is out of connections raises StoreUnavailable, which the webhook turns into 503.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.engine import URL, Connection, Engine, RowMapping, make_url
from sqlalchemy.sql.elements import TextClause

log = logging.getLogger(__name__)

# How long a statement waits for another writer's lock. The webhook path waits less: Zendesk gives up
# after 10 s, so a delivery is better answered 503 (and sent again) than left hanging.
BUSY_MS, WEBHOOK_BUSY_MS = 30_000, 5_000
AUTOCHECKPOINT_PAGES = 10_000  # about 40 MB of WAL


class StoreUnavailable(RuntimeError):
    """The database can't be reached or is too busy right now; nothing was written. Retry later."""


def database_url(url_or_path: str | Path) -> URL:
    """A SQLAlchemy URL for `DATABASE_URL`, or for a bare SQLite file path.

    `postgres://` and `postgresql://` (as Heroku, Render and Fly print them) mean psycopg 3.
    """
    value = str(url_or_path)
    if "://" not in value:
        return URL.create("sqlite", database=value)
    url = make_url(value)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"DATABASE_URL must be sqlite:/// or postgresql://; got a {url.drivername!r} URL")
    return url


_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk I/O", "readonly", "no such table", "malformed")


@functools.lru_cache(maxsize=1024)
def _text(sql: str) -> TextClause:
    return text(sql)


def _values(params: Mapping[str, Any] | None) -> dict[str, Any]:
    # Enum states go in as their values: drivers differ on what an Enum means.
    return {k: v.value if isinstance(v, Enum) else v for k, v in (params or {}).items()}


def _rows(conn: Connection, sql: str, params: Mapping[str, Any] | None) -> list[RowMapping]:
    result = conn.execute(_text(sql), _values(params))
    return list(result.mappings()) if result.returns_rows else []


@contextlib.contextmanager
def unavailable_as_store_error() -> Iterator[None]:
    """Turn "can't reach / too busy" driver errors into StoreUnavailable; real bugs stay what they are."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
        reason = str(getattr(error, "orig", None) or error).split("\n")[0]
        # SQLite calls its syntax errors OperationalError too: only a lock, a busy file or a missing one
        # is "unavailable"; anything else is a bug and stays loud.
        if isinstance(getattr(error, "orig", None), sqlite3.Error) \
                and not any(word in reason for word in _SQLITE_UNAVAILABLE):
            raise
        raise StoreUnavailable(reason[:200]) from error


class Database:
    """An engine for one DATABASE_URL, with the few helpers the store's modules share."""

    def __init__(self, url: str | Path, *, clock: Callable[[], float] = time.time):
        self.url = database_url(url)
        self.clock = clock
        self.dialect = self.url.get_backend_name()
        self.sqlite = self.dialect == "sqlite"
        if self.sqlite:
            self.engine = self._sqlite_engine()
        else:
            self.engine = create_engine(
                self.url, isolation_level="AUTOCOMMIT", pool_size=10, max_overflow=20, pool_timeout=10,
                pool_pre_ping=True, pool_recycle=1800,
                # A server that doesn't answer is found within seconds, not at the OS's TCP timeout.
                connect_args={"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                              "keepalives_interval": 5, "keepalives_count": 3,
                              "application_name": "deskroute"})

    @property
    def path(self) -> str:
        """The SQLite file (tests, benchmarks, the checkpointer)."""
        return str(self.url.database or "")

    def _sqlite_engine(self) -> Engine:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=16, max_overflow=-1,
                               connect_args={"timeout": BUSY_MS / 1000, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; WAL keeps it whole
            dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            # Checkpoints (copying the WAL into the database, with an fsync) take milliseconds. A background
            # thread runs them (start_checkpointer); this high mark is only a bound for processes without one.
            dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            record.info["busy_ms"] = BUSY_MS

        return engine

    def execute(self, sql: str, params: Mapping[str, Any] | None = None, *,
                busy_ms: int = BUSY_MS) -> list[RowMapping]:
        """Run one statement in its own transaction; its rows (none for a plain write).

        `busy_ms` bounds how long SQLite waits for another writer (the webhook path waits less).
        """
        with unavailable_as_store_error(), self.engine.connect() as conn:
            if self.sqlite:
                self._busy(conn, busy_ms)
            return _rows(conn, sql, params)

    def _busy(self, conn: Connection, ms: int) -> None:
        info = conn.connection.info
        if info.get("busy_ms") != ms:  # a PRAGMA only when this pooled connection's wait changes
            conn.exec_driver_sql(f"PRAGMA busy_timeout={int(ms)}")
            info["busy_ms"] = ms

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Several statements as one change. On SQLite it takes the write lock at once (BEGIN IMMEDIATE),
        so two writers never deadlock upgrading a read lock."""
        with unavailable_as_store_error(), self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if self.sqlite else "BEGIN")
            try:
                yield Transaction(conn)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def notify(self, channel: str) -> None:
        """Wake processes listening on `channel` (PostgreSQL; on SQLite, workers poll)."""
        if not self.sqlite:
            self.execute("SELECT pg_notify(:channel, '')", {"channel": channel})

    def ping(self) -> None:
        """Raise StoreUnavailable if the database can't be read."""
        self.execute("SELECT 1")

    def start_checkpointer(self, interval: float = 1.0) -> threading.Thread | None:
        """SQLite: checkpoint the WAL every `interval` seconds on a daemon thread, so no request pays for it."""
        if not self.sqlite:
            return None

        def run() -> None:
            while True:
                time.sleep(interval)
                # Busy or briefly unavailable: the next round, or the autocheckpoint bound, catches up.
                with contextlib.suppress(StoreUnavailable):
                    self.execute("PRAGMA wal_checkpoint(PASSIVE)")

        thread = threading.Thread(target=run, name="deskroute-checkpointer", daemon=True)
        thread.start()
        return thread

    def _connect_raw(self) -> Any:
        """A psycopg connection of its own, outside the pool (LISTEN and session locks need one)."""
        import psycopg

        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=5, keepalives=1, keepalives_idle=10,
                               keepalives_interval=5, keepalives_count=3, application_name="deskroute")

    def listen(self, channel: str, wake: Callable[[], None], stop: threading.Event) -> threading.Thread | None:
        """PostgreSQL: call `wake` whenever `channel` is notified, on a daemon thread that reconnects after
        errors (and wakes once on each connect, for whatever arrived meanwhile). None on SQLite."""
        if self.sqlite:
            return None
        import psycopg

        def run() -> None:
            delay = 1.0
            while not stop.is_set():
                try:
                    with self._connect_raw() as conn:
                        conn.execute(f'LISTEN "{channel}"')
                        delay = 1.0
                        wake()
                        while not stop.is_set():
                            for _ in conn.notifies(timeout=1.0, stop_after=1):
                                wake()
                except psycopg.Error as error:  # workers keep polling meanwhile: nothing waits on this
                    log.warning("listen connection lost; reconnecting", extra={"error": type(error).__name__,
                                                                               "retry_s": delay})
                    stop.wait(delay)
                    delay = min(delay * 2, 30.0)

        thread = threading.Thread(target=run, name=f"deskroute-listen-{channel}", daemon=True)
        thread.start()
        return thread

    def session_lock(self, key: int) -> SessionLock:
        """A PostgreSQL advisory lock held by a connection of its own (see SessionLock)."""
        return SessionLock(self, key)

    def dispose(self) -> None:
        """Close pooled connections (tests that drop their database; `db copy` when done)."""
        self.engine.dispose()


class SessionLock:
    """A PostgreSQL session-level advisory lock on a dedicated connection. The server releases it the
    moment that connection ends: a process that dies (or whose machine drops off the network, within the
    keepalive's ~25 s) lets the next process take over without waiting for a lease to run out."""

    def __init__(self, db: Database, key: int):
        self.db = db
        self.key = key
        self._conn: Any = None
        self._held = False

    def hold(self) -> bool:
        """Take the lock if it is free; True while this process holds it (checked on the server)."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._held = False
                self._conn = self.db._connect_raw()
            if self._held:
                self._conn.execute("SELECT 1")  # the connection, and so the lock, still stands
            else:
                self._held = bool(self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0])
        except psycopg.Error:
            self.close()
        return self._held

    def release(self) -> None:
        """Let another process take the lock now."""
        self.close()  # ending the session releases every lock it held

    def close(self) -> None:
        self._held = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class Transaction:
    """Statements inside Database.transaction()."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[RowMapping]:
        return _rows(self.conn, sql, params)


class Part:
    """Base of the store's modules: each keeps one kind of record, over one shared Database."""

    def __init__(self, db: Database):
        self.db = db
        self.execute = db.execute

    @property
    def clock(self) -> Callable[[], float]:
        return self.db.clock
