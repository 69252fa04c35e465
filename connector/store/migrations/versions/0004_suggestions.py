"""Taxonomy suggestions: the tickets no category took (redacted), and the clusters found in them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unrouted",
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("ticket_id", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("guess", sa.Text(), nullable=True),
        sa.Column("guess_confidence", sa.Float(), nullable=True),
        sa.Column("group_id", sa.Text(), nullable=True),
        sa.Column("final_group_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("moved_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("platform", "ticket_id"),
    )
    op.create_index("idx_unrouted_created_at", "unrouted", ["created_at"], unique=False)
    op.create_table(
        "suggestions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("computed_at", sa.Float(), nullable=False),
        sa.Column("n_tickets", sa.Integer(), nullable=False),
        sa.Column("clusters", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("suggestions")
    op.drop_index("idx_unrouted_created_at", table_name="unrouted")
    op.drop_table("unrouted")
