"""Databases for tests: a SQLite file in the test's folder, or (with `pytest --database postgresql`)
a fresh PostgreSQL database per test, copied from a migrated template and dropped afterwards.

The server is DESKROUTE_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test, the CI's);
tests that need PostgreSQL whatever the run's dialect use `postgres_url()` and skip without a server.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

SERVER = os.environ.get("DESKROUTE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# created: to drop after the test; used: migrated ones this test holds; free: migrated ones to reuse.
_state: dict[str, object] = {"dialect": "sqlite", "template": None, "created": [], "used": [], "free": [],
                             "by_folder": {}}


def set_dialect(dialect: str) -> None:
    _state["dialect"] = dialect


def dialect() -> str:
    return str(_state["dialect"])


def _admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(SERVER.replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
                           connect_timeout=3)


def server_problem() -> str | None:
    """Why PostgreSQL can't be used here, or None."""
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"no PostgreSQL at {SERVER} ({type(exc).__name__}); set DESKROUTE_TEST_POSTGRES"
    return None


def _url(name: str) -> str:
    base, _, _ = SERVER.rpartition("/")
    return f"{base}/{name}"


def _template() -> str:
    name = _state["template"]
    if name is None:
        from connector.store import Store

        name = f"deskroute_template_{os.getpid()}"
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        store = Store(_url(name))
        store.migrate()
        store.close()  # a template must have no connections when it is copied
        _state["template"] = name
        _state["created"].append(name)  # type: ignore[attr-defined]
    return str(name)


def _emptied(name: str) -> bool:
    """Empty a migrated database a finished test used, for the next one (much faster than a new one)."""
    import psycopg

    from connector.store.schema import metadata

    try:
        with psycopg.connect(_url(name), autocommit=True, connect_timeout=3) as conn:
            conn.execute("SET lock_timeout = '3s'")
            tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
            conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")
        return True
    except psycopg.Error:  # something still holds a lock: make a fresh one instead
        return False


def postgres_url(*, migrated: bool = True) -> str:
    """A PostgreSQL database of its own for this test, empty and migrated (or, with migrated=False, without
    any table); skips the test without a server."""
    problem = server_problem()
    if problem:
        pytest.skip(problem)
    free: list[str] = _state.setdefault("free", [])  # type: ignore[assignment]
    while migrated and free:
        name = free.pop()
        if _emptied(name):
            _state["used"].append(name)  # type: ignore[attr-defined]
            return _url(name)
        _state["created"].append(name)  # type: ignore[attr-defined]  # dropped after this test
    name = f"deskroute_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        if migrated:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_template()}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    _state["used" if migrated else "created"].append(name)  # type: ignore[attr-defined]
    return _url(name)


def database_url(folder: Path, name: str = "deskroute.db") -> str:
    """The test's database in this run's dialect (one per folder and name)."""
    if dialect() == "sqlite":
        return f"sqlite:///{folder / name}"
    key = str(folder / name)
    by_folder: dict[str, str] = _state["by_folder"]  # type: ignore[assignment]
    if key not in by_folder:
        by_folder[key] = postgres_url()
    return by_folder[key]


def drop_created(*, keep_template: bool = True) -> None:
    """After each test: migrated databases go back to the free list, the others are dropped. At the end of
    the run (keep_template=False), every one is dropped, the template too."""
    used: list[str] = _state["used"]  # type: ignore[assignment]
    free: list[str] = _state["free"]  # type: ignore[assignment]
    free.extend(used)
    used.clear()
    if not keep_template:
        _state["created"].extend(free)  # type: ignore[attr-defined]
        free.clear()
    created: list[str] = _state["created"]  # type: ignore[assignment]
    template = _state["template"]
    keep = [template] if keep_template and template else []
    doomed = [name for name in created if name not in keep]
    if doomed:
        with _admin() as conn:
            for name in doomed:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _state["created"] = keep
    _state["by_folder"] = {}
    if not keep_template:
        _state["template"] = None
