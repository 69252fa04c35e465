"""Admin users: people who sign in to the admin UI by name, so reviews and edits say who made them; a
team lead reviews corrections, an admin also changes the routing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False, server_default="lead"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.CheckConstraint("role IN ('lead', 'admin')", name="admin_users_role"),
    )


def downgrade() -> None:
    op.drop_table("admin_users")
