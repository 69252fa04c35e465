"""Alembic's entry point. Deskroute runs it itself (connector/store/migrate.py), on a connection it opens."""

from __future__ import annotations

from alembic import context

from connector.store.schema import metadata

connection = context.config.attributes["connection"]
# render_as_batch: SQLite can't ALTER most things; Alembic's batch mode copies the table instead.
# transactional_ddl: each revision is one transaction on SQLite too (see migrate._connection).
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  transaction_per_migration=True, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
