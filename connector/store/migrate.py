"""Schema migrations with Alembic, safe when several processes start at once.

One process migrates while the others wait and then find nothing to do: on PostgreSQL they queue on
an advisory lock, on SQLite (one machine) on a lock file beside the database. An older SQLite file,
migrated before Alembic, is first brought to revision 0001 and stamped (connector/store/legacy.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from connector.store.db import BUSY_MS, Database, unavailable_as_store_error

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
SCRIPTS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (tests/test_queue.py checks they agree). A process whose
# database is already there doesn't load Alembic at all: a web worker stays 10 MB smaller.
HEAD = "0006"
_ADVISORY_KEY = 0x6465736B726F7574  # "deskrout": one number every Deskroute process agrees on


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    return config


def head() -> str:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


@contextlib.contextmanager
def _one_at_a_time(db: Database) -> Iterator[None]:
    if db.sqlite:
        path = Path(db.path)
        if not path.parent.exists():
            raise FileNotFoundError(f"the database's folder {path.parent} doesn't exist")
        with open(f"{path}.migrate-lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    with db.engine.connect() as conn:
        conn.exec_driver_sql("SET lock_timeout = '5min'")  # another process's migration may take a while
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({_ADVISORY_KEY})")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_ADVISORY_KEY})")


@contextlib.contextmanager
def _connection(db: Database) -> Iterator[Connection]:
    """A connection on which each revision is one transaction, DDL included. PostgreSQL's DDL is
    transactional as is; SQLite's is too once the driver stops managing transactions (the pool's
    connections run in autocommit), so a process killed mid-revision leaves the file as it was."""
    if not db.sqlite:
        with db.engine.connect() as conn:
            yield conn.execution_options(isolation_level="READ COMMITTED")
        return
    engine = create_engine(db.url, poolclass=NullPool, connect_args={"timeout": BUSY_MS / 1000})

    @event.listens_for(engine, "connect")
    def _manual(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def current(db: Database) -> str | None:
    """The database's revision (None: an empty database)."""
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _at_head(db: Database) -> bool:
    try:
        rows = db.execute("SELECT version_num FROM alembic_version")
    except Exception:  # noqa: BLE001 - no table yet, or no database: the full path says what is wrong
        return False
    return [row["version_num"] for row in rows] == [HEAD]


def upgrade(db: Database, revision: str = "head") -> list[str]:
    """Apply pending migrations; returns the revisions applied now, oldest first."""
    if revision == "head" and _at_head(db):
        return []
    from alembic import command
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = _config()
    with unavailable_as_store_error(), _one_at_a_time(db), _connection(db) as conn:
        config.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        conn.commit()
        if db.sqlite and "_migrations" in tables and "alembic_version" not in tables:
            from connector.store import legacy  # sqlite-utils, which imports numpy: only for such old files

            legacy.upgrade(db.path)
            command.stamp(config, "0001")
            conn.commit()
            log.info("pre-Alembic database stamped at 0001")
        before = MigrationContext.configure(conn).get_current_revision()
        conn.commit()  # Alembic opens a transaction per revision itself
        command.upgrade(config, revision)
        conn.commit()
        after = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
    if before == after:
        return []
    scripts = ScriptDirectory.from_config(config)
    applied = [s.revision for s in scripts.iterate_revisions(after, before)]
    applied.reverse()
    log.info("database migrated", extra={"revisions": ",".join(applied)})
    return applied
