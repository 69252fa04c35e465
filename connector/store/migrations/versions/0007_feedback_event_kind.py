"""Sidebar-feedback jobs that older versions queued as `ticket.group_changed` (keyed "feedback:...") get their
own kind, `correction.text_needed`, so that the Tickets page and `tickets list` name them for what they are.
(The worker still takes the old kind: an older web process may queue one during a rolling upgrade.)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE events SET kind = 'correction.text_needed' "
               "WHERE kind = 'ticket.group_changed' AND dedup_key LIKE 'feedback:%'")


def downgrade() -> None:
    pass  # the old versions' worker takes either kind
