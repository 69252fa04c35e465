"""Moving an install from one database to another (`deskroute db copy`): SQLite to PostgreSQL, say.

Every durable table is copied whole, in primary-key order and in batches, inside one transaction on
the target, so a failed copy leaves the target empty rather than half-filled. The target must be empty:
copying into a live install would mix two histories. Counts are checked table by table afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection

from connector.store import Store
from connector.store.schema import DURABLE

BATCH = 500


class CopyRefused(RuntimeError):
    """The copy can't start; nothing was written."""


@dataclass
class Copied:
    table: str
    source: int  # rows in the source
    target: int  # rows in the target afterwards

    @property
    def ok(self) -> bool:
        return self.source == self.target


def _count(store: Store, table: str) -> int:
    return int(store.db.execute(f"SELECT count(*) AS n FROM {table}")[0]["n"])


def copy(source: Store, target: Store) -> list[Copied]:
    """Copy every durable table from `source` to `target`; both are brought to the newest schema first."""
    if source.describe() == target.describe():
        raise CopyRefused("source and target are the same database")
    source.migrate()
    target.migrate()
    busy = [table.name for table in DURABLE if _count(target, table.name)]
    if busy:
        raise CopyRefused(f"the target already holds data ({', '.join(busy)}); copy into an empty database")
    with source.db.engine.connect() as read, target.db.engine.connect() as write:
        # One snapshot of the source (and a server-side cursor on PostgreSQL needs a transaction).
        read = read.execution_options(isolation_level="SERIALIZABLE" if source.db.sqlite else "REPEATABLE READ")
        write = write.execution_options(isolation_level="SERIALIZABLE" if target.db.sqlite else "READ COMMITTED")
        with read.begin(), write.begin():
            for table in DURABLE:
                rows = read.execution_options(yield_per=BATCH).execute(
                    select(table).order_by(*table.primary_key.columns))
                for batch in rows.mappings().partitions(BATCH):
                    write.execute(insert(table), [dict(row) for row in batch])
            if not target.db.sqlite:
                _advance_sequences(write)
    return [Copied(table.name, _count(source, table.name), _count(target, table.name)) for table in DURABLE]


def _advance_sequences(conn: Connection) -> None:
    """Copied ids were given explicitly, so PostgreSQL's sequences never moved: set each past its table's
    largest id, or the next insert would collide with a copied row."""
    for table in DURABLE:
        columns = list(table.primary_key.columns)
        if len(columns) != 1 or columns[0].type.python_type is not int:
            continue  # a natural key (platform, ticket_id...): no sequence
        column = columns[0]
        largest = conn.execute(select(func.max(column))).scalar()
        if largest is not None:
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), :n)"),
                         {"n": largest})
