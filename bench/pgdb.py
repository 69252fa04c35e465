"""Throwaway PostgreSQL databases for the benchmarks.

`fresh_database(url, "bench_soak")` connects to the server `url` names (to the database it names, or
`postgres`), runs CREATE DATABASE bench_soak_<random>, yields the same URL pointed at the new database
(as Deskroute's DATABASE_URL), and drops it afterwards (WITH (FORCE): a SIGKILLed worker's session may
linger) unless `keep`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool


def is_postgres(url: str | None) -> bool:
    return bool(url) and make_url(url).get_backend_name() == "postgresql"


def libpq_url(url: str | URL) -> str:
    """`postgresql://...` as libpq (psycopg.connect) and Deskroute's DATABASE_URL both take it."""
    return make_url(str(url) if isinstance(url, str) else url).set(drivername="postgresql") \
        .render_as_string(hide_password=False)


def _admin_url(url: str) -> URL:
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    return parsed if parsed.database else parsed.set(database="postgres")


def create_database(url: str, prefix: str) -> str:
    """Create `<prefix>_<random>` on the server of `url`; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    assert name.replace("_", "").isalnum()
    engine = create_engine(_admin_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return libpq_url(make_url(url).set(database=name))


def drop_database(url: str, database_url: str) -> None:
    """Drop the database `database_url` names, from the server of `url`."""
    name = make_url(database_url).database
    engine = create_engine(_admin_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@contextlib.contextmanager
def fresh_database(url: str, prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A new database on the server of `url`, dropped on the way out unless `keep`."""
    database_url = create_database(url, prefix)
    try:
        yield database_url
    finally:
        if not keep:
            drop_database(url, database_url)


def describe(url: str) -> str:
    """The URL without its password, for output."""
    return make_url(url).render_as_string(hide_password=True)
