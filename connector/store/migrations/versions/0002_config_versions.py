"""Configuration versions and helpdesk group lists in the database; on PostgreSQL, new events notify
idle workers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "config_versions",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("files", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    with op.batch_alter_table("config_changes") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
    op.create_table(
        "helpdesk_groups",
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("groups", sa.Text(), nullable=True),
        sa.Column("fetched_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("platform"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # A new event wakes every listening worker, on any machine. A row trigger: a duplicate delivery
        # (ON CONFLICT DO NOTHING) inserts no row and wakes nobody; identical notifications in one
        # transaction are folded into one.
        op.execute("""
            CREATE FUNCTION deskroute_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('deskroute_events', '');
                RETURN NULL;
            END $$""")
        op.execute("CREATE TRIGGER events_notify AFTER INSERT ON events"
                   " FOR EACH ROW EXECUTE FUNCTION deskroute_notify_events()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
        op.execute("DROP FUNCTION IF EXISTS deskroute_notify_events()")
    op.drop_table("helpdesk_groups")
    with op.batch_alter_table("config_changes") as batch:
        batch.drop_column("version")
    op.drop_table("config_versions")
