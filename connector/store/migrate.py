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

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from connector.store import legacy
from connector.store.db import Database, unavailable_as_store_error

log = logging.getLogger(__name__)
SCRIPTS = Path(__file__).parent / "migrations"
_ADVISORY_KEY = 0x6465736B726F7574  # "deskrout": one number every Deskroute process agrees on


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    return config


def head() -> str:
    """The newest revision this code knows."""
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
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({_ADVISORY_KEY})")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_ADVISORY_KEY})")


def current(db: Database) -> str | None:
    """The database's revision (None: an empty database)."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> list[str]:
    """Apply pending migrations; returns the revisions applied now, oldest first."""
    config = _config()
    with unavailable_as_store_error(), _one_at_a_time(db), db.engine.connect() as conn:
        if not db.sqlite:  # PostgreSQL's DDL is transactional: each revision applies whole or not at all
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        config.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        if db.sqlite and "_migrations" in tables and "alembic_version" not in tables:
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
