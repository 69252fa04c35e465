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

from connector.store.clock import DatabaseClock

log = logging.getLogger(__name__)

# How long a statement waits for another writer's lock. The webhook path waits less: Zendesk gives up
# after 10 s, so a delivery is better answered 503 (and sent again) than left hanging.
BUSY_MS, WEBHOOK_BUSY_MS = 30_000, 5_000
AUTOCHECKPOINT_PAGES = 10_000  # about 40 MB of WAL


# A server that stops answering is found within seconds, on both sides: the client's keepalives and
# TCP timeout, and the server's (so it frees a dead leader's advisory lock, which it would otherwise
# hold for the OS's two hours). Statements give up after 30 s, and a lock not granted in 10 s is a 503.
_PG_CONNECT: dict[str, Any] = {
    "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 25_000, "application_name": "deskroute",
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
               " -c tcp_user_timeout=25000 -c statement_timeout=30000 -c lock_timeout=10000",
}


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
    if url.get_backend_name() in ("postgres", "postgresql"):
        return url.set(drivername="postgresql+psycopg")  # LISTEN and session locks use psycopg directly
    if url.get_backend_name() != "sqlite":
        raise ValueError(f"DATABASE_URL must be sqlite:/// or postgresql://; got a {url.drivername!r} URL")
    return url if url.database else url.set(database="deskroute.db")


# What "can't store this now, try again" looks like. SQLite: busy, locked, out of memory, read-only, I/O
# error, disk full, can't open (primary result codes). PostgreSQL (SQLSTATE): connection (08), out of
# resources (53), shut down or cancelled (57), serialization or deadlock (40), a read-only server after
# failover (25006), a lock not granted in time (55P03). Anything else (a syntax error, a missing table,
# a constraint) is a bug, and stays loud instead of turning into endless retries.
_SQLITE_UNAVAILABLE = {5, 6, 7, 8, 10, 13, 14}
_POSTGRES_UNAVAILABLE_CLASSES = ("08", "53", "57", "40")
_POSTGRES_UNAVAILABLE = {"25006", "55P03"}


def _driver_unavailable(orig: BaseException | None) -> bool:
    """Whether a driver's own exception means "try again later" (see the codes above)."""
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_UNAVAILABLE
    state = getattr(orig, "sqlstate", None)
    if state is None:  # psycopg raised before the server answered: no connection
        return type(orig).__name__ in ("OperationalError", "InterfaceError")
    return state[:2] in _POSTGRES_UNAVAILABLE_CLASSES or state in _POSTGRES_UNAVAILABLE


@functools.lru_cache(maxsize=1024)
def _text(sql: str) -> TextClause:
    return text(sql)


def _value(v: Any) -> Any:
    if isinstance(v, Enum):  # states go in as their values: drivers differ on what an Enum means
        return v.value
    if isinstance(v, str) and "\x00" in v:  # PostgreSQL's text can't hold NUL; a ticket may
        return v.replace("\x00", "")
    return v


def _values(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _value(v) for k, v in (params or {}).items()}


def _rows(conn: Connection, sql: str, params: Mapping[str, Any] | None) -> list[RowMapping]:
    result = conn.execute(_text(sql), _values(params))
    return list(result.mappings()) if result.returns_rows else []


def _is_driver_error(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) or type(error).__module__.startswith("psycopg")


@contextlib.contextmanager
def unavailable_as_store_error() -> Iterator[None]:
    """Turn "can't reach / too busy" errors into StoreUnavailable, whether SQLAlchemy wrapped the driver's
    exception or it came straight from a pooled driver connection; real bugs stay what they are."""
    try:
        yield
    except exc.TimeoutError as error:  # no connection free in the pool in time
        raise StoreUnavailable("database connection pool exhausted") from error
    except exc.DBAPIError as error:
        if not (isinstance(error, exc.InterfaceError) or error.connection_invalidated
                or _driver_unavailable(error.orig)):
            raise
        raise StoreUnavailable(str(error.orig or error).split("\n")[0][:200]) from error
    except Exception as error:
        if not (_is_driver_error(error) and _driver_unavailable(error)):
            raise
        raise StoreUnavailable(str(error).split("\n")[0][:200]) from error


class Database:
    """An engine for one DATABASE_URL, with the few helpers the store's modules share."""

    def __init__(self, url: str | Path, *, clock: Callable[[], float] | None = None,
                 host_time: Callable[[], float] = time.time):
        self.url = database_url(url)
        self.dialect = self.url.get_backend_name()
        self.sqlite = self.dialect == "sqlite"
        # Real time, agreed by every machine of the install: the host's on SQLite, the server's on PostgreSQL.
        self.wall: Callable[[], float] = host_time if self.sqlite else DatabaseClock(self._server_time,
                                                                                     host_time=host_time)
        self.clock = clock or self.wall  # tests and the demo run on a clock of their own
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}
        if self.sqlite:
            self.engine = self._sqlite_engine()
        else:
            # hide_parameters: a failing statement's message must not carry ticket text into a traceback.
            # No pool_pre_ping: it costs a round trip per statement (a fifth of a webhook's time). After a
            # server restart the first statement on each stale connection fails instead, as StoreUnavailable
            # (a 503 the helpdesk retries, a worker's short pause), and SQLAlchemy then empties the pool.
            self.engine = create_engine(
                self.url, isolation_level="AUTOCOMMIT", pool_size=10, max_overflow=30, pool_timeout=4,
                pool_recycle=1800, hide_parameters=True, connect_args=_PG_CONNECT)

            @event.listens_for(self.engine, "connect")
            def _timeout(dbapi_conn: Any, record: Any) -> None:
                record.info["busy_ms"] = BUSY_MS  # the statement_timeout in _PG_CONNECT

    @property
    def path(self) -> str:
        """The SQLite file (tests, benchmarks, the checkpointer)."""
        return str(self.url.database or "")

    def _sqlite_engine(self) -> Engine:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=16, max_overflow=-1,
                               hide_parameters=True,
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
                busy_ms: int = BUSY_MS) -> list[dict[str, Any]]:
        """Run one statement in its own transaction; its rows (none for a plain write).

        `busy_ms` bounds how long it may wait (the webhook path waits less, and then answers 503).
        The statement is compiled by SQLAlchemy once, to the driver's own form, and then runs on a pooled
        driver connection directly: SQLAlchemy's per-statement machinery cost more than SQLite itself
        (about 55 us against 45 us per insert), and every webhook pays it.
        """
        statement, names = self._driver_sql(sql)
        values = _values(params)
        args: Any = values if names is None else tuple(values[name] for name in names)
        with unavailable_as_store_error():
            raw = self.engine.raw_connection()
            try:
                self._busy_raw(raw, busy_ms)
                cursor = raw.cursor()
                cursor.execute(statement, args)
                columns = [d[0] for d in cursor.description] if cursor.description else None
                rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()] if columns else []
                cursor.close()
                return rows
            except self.engine.dialect.loaded_dbapi.Error as error:
                if self.engine.dialect.is_disconnect(error, raw.dbapi_connection, None):
                    raw.invalidate()
                    self.engine.dispose()  # its siblings in the pool are dead too: a new pool reconnects
                raise
            finally:
                raw.close()  # back to the pool

    def _driver_sql(self, sql: str) -> tuple[str, tuple[str, ...] | None]:
        """`sql` in the driver's parameter style, and the order of its parameters (None: by name)."""
        compiled = self._compiled.get(sql)
        if compiled is None:
            clause = _text(sql).compile(dialect=self.engine.dialect)
            positions = getattr(clause, "positiontup", None)
            compiled = self._compiled[sql] = (clause.string, tuple(positions) if positions else None)
        return compiled

    def _busy_raw(self, raw: Any, ms: int) -> None:
        """Bound how long this connection's statements wait: SQLite for another writer's lock, PostgreSQL
        for locks and the statement itself. One statement only when a pooled connection's bound changes."""
        info = raw.info
        if info.get("busy_ms") != ms:
            bound = f"PRAGMA busy_timeout={int(ms)}" if self.sqlite else f"SET statement_timeout = {int(ms)}"
            cursor = raw.cursor()
            cursor.execute(bound)
            cursor.close()
            info["busy_ms"] = ms


    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Several statements as one change. On SQLite it takes the write lock at once (BEGIN IMMEDIATE),
        so two writers never deadlock upgrading a read lock."""
        with unavailable_as_store_error(), self.engine.connect() as conn:
            self._busy_raw(conn.connection, BUSY_MS)  # not whatever bound the pooled connection's last user set
            conn.exec_driver_sql("BEGIN IMMEDIATE" if self.sqlite else "BEGIN")
            try:
                yield Transaction(conn)
            except BaseException:
                with contextlib.suppress(Exception):  # the first error is the one to see
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def notify(self, channel: str) -> None:
        """Wake processes listening on `channel` (PostgreSQL; on SQLite, workers poll)."""
        if not self.sqlite:
            self.execute("SELECT pg_notify(:channel, '')", {"channel": channel})

    def _server_time(self) -> float:
        return float(self.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp()) AS now")[0]["now"])

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
        return psycopg.connect(conninfo, autocommit=True, **_PG_CONNECT)

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
        self._mutex = threading.Lock()  # the scheduler's threads ask at once every minute

    def hold(self) -> bool:
        """Take the lock if it is free; True while this process holds it (checked on the server)."""
        import psycopg

        with self._mutex:
            return self._hold(psycopg.Error)

    def _hold(self, errors: type[Exception]) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._held = False
                self._conn = self.db._connect_raw()
            if self._held:
                self._conn.execute("SELECT 1")  # the connection, and so the lock, still stands
            else:
                self._held = bool(self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0])
        except errors:
            self._close()
        return self._held

    def release(self) -> None:
        """Let another process take the lock now."""
        with self._mutex:
            self._close()  # ending the session releases every lock it held

    def _close(self) -> None:
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
