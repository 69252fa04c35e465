"""The schema as the last pre-Alembic SQLite migration (m006) left it: an older install's file is stamped here.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('config_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=True),
    sa.Column('author', sa.Text(), nullable=True),
    sa.Column('file', sa.Text(), nullable=True),
    sa.Column('summary', sa.Text(), nullable=True),
    sa.Column('diff', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('corrections',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('platform', sa.Text(), nullable=False),
    sa.Column('ticket_id', sa.Text(), nullable=False),
    sa.Column('change_id', sa.Text(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('predicted_category', sa.Text(), nullable=True),
    sa.Column('predicted_group_id', sa.Text(), nullable=True),
    sa.Column('predicted_tier', sa.Text(), nullable=True),
    sa.Column('predicted_confidence', sa.Float(), nullable=True),
    sa.Column('previous_group_id', sa.Text(), nullable=True),
    sa.Column('corrected_group_id', sa.Text(), nullable=True),
    sa.Column('corrected_category', sa.Text(), nullable=True),
    sa.Column('agent_id', sa.Text(), nullable=True),
    sa.Column('via', sa.Text(), nullable=True),
    sa.Column('routed_at', sa.Float(), nullable=True),
    sa.Column('rerouted_at', sa.Float(), nullable=True),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('reviewed_by', sa.Text(), nullable=True),
    sa.Column('reviewed_at', sa.Float(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_corrections_platform_ticket_id_change_id', 'corrections', ['platform', 'ticket_id', 'change_id'], unique=True)
    op.create_index('idx_corrections_rerouted_at', 'corrections', ['rerouted_at'], unique=False)
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('platform', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('ticket_id', sa.Text(), nullable=False),
    sa.Column('dedup_key', sa.Text(), nullable=False),
    sa.Column('source_id', sa.Text(), nullable=True),
    sa.Column('data', sa.Text(), nullable=True),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('due_at', sa.Float(), nullable=False),
    sa.Column('lease_owner', sa.Text(), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_events_platform_dedup_key', 'events', ['platform', 'dedup_key'], unique=True)
    op.create_index('idx_events_state_due_at', 'events', ['state', 'due_at'], unique=False)
    op.create_table('group_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('platform', sa.Text(), nullable=True),
    sa.Column('ticket_id', sa.Text(), nullable=True),
    sa.Column('group_id', sa.Text(), nullable=True),
    sa.Column('previous_group_id', sa.Text(), nullable=True),
    sa.Column('actor_id', sa.Text(), nullable=True),
    sa.Column('via', sa.Text(), nullable=True),
    sa.Column('occurred_at', sa.Text(), nullable=True),
    sa.Column('received_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_group_changes_event_id', 'group_changes', ['event_id'], unique=True)
    op.create_index('idx_group_changes_platform_ticket_id', 'group_changes', ['platform', 'ticket_id'], unique=False)
    op.create_table('history',
    sa.Column('platform', sa.Text(), nullable=False),
    sa.Column('ticket_id', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('category', sa.Text(), nullable=True),
    sa.Column('group_id', sa.Text(), nullable=True),
    sa.Column('solved_at', sa.Text(), nullable=True),
    sa.Column('imported_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('platform', 'ticket_id')
    )
    op.create_table('install_secrets',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('llm_calls',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=True),
    sa.Column('platform', sa.Text(), nullable=True),
    sa.Column('ticket_id', sa.Text(), nullable=True),
    sa.Column('model', sa.Text(), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('prompt_version', sa.Text(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('cache_read_tokens', sa.Integer(), nullable=True),
    sa.Column('cache_write_tokens', sa.Integer(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('idx_llm_calls_at', 'llm_calls', ['at'], unique=False)
    op.create_table('locks',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('owner', sa.Text(), nullable=True),
    sa.Column('until', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('login_failures',
    sa.Column('client', sa.Text(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=True),
    sa.Column('last_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('client')
    )
    op.create_index('idx_login_failures_last_at', 'login_failures', ['last_at'], unique=False)
    op.create_table('models',
    sa.Column('version', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('created_at', sa.Float(), nullable=True),
    sa.Column('labels', sa.Text(), nullable=True),
    sa.Column('n_examples', sa.Integer(), nullable=True),
    sa.Column('metrics', sa.Text(), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('sha256', sa.Text(), nullable=True),
    sa.Column('blob', sa.LargeBinary(), nullable=True),
    sa.Column('active', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('oauth_tokens',
    sa.Column('platform', sa.Text(), nullable=False),
    sa.Column('grant', sa.Text(), nullable=True),
    sa.Column('client_id', sa.Text(), nullable=True),
    sa.Column('key_id', sa.Text(), nullable=True),
    sa.Column('access_token', sa.Text(), nullable=True),
    sa.Column('refresh_token', sa.Text(), nullable=True),
    sa.Column('scope', sa.Text(), nullable=True),
    sa.Column('issued_at', sa.Float(), nullable=True),
    sa.Column('expires_at', sa.Float(), nullable=True),
    sa.Column('refresh_expires_at', sa.Float(), nullable=True),
    sa.Column('connected_at', sa.Float(), nullable=True),
    sa.Column('connected_as', sa.Text(), nullable=True),
    sa.Column('generation', sa.Integer(), server_default='0', nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_error_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('platform')
    )
    op.create_table('oauth_users',
    sa.Column('platform', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('first_seen', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('platform', 'user_id')
    )
    op.create_table('tickets',
    sa.Column('platform', sa.Text(), nullable=False),
    sa.Column('ticket_id', sa.Text(), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('first_seen_at', sa.Float(), nullable=False),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('category', sa.Text(), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('tier', sa.Text(), nullable=True),
    sa.Column('guardrail', sa.Text(), nullable=True),
    sa.Column('group_id', sa.Text(), nullable=True),
    sa.Column('priority', sa.Text(), nullable=True),
    sa.Column('triage', sa.Integer(), nullable=True),
    sa.Column('classification', sa.Text(), nullable=True),
    sa.Column('decision', sa.Text(), nullable=True),
    sa.Column('model_version', sa.Text(), nullable=True),
    sa.Column('decided_at', sa.Float(), nullable=True),
    sa.Column('applied_at', sa.Float(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('prompt_version', sa.Text(), nullable=True),
    sa.Column('training_text', sa.Text(), nullable=True),
    sa.Column('reroute_checked_at', sa.Float(), nullable=True),
    sa.Column('text_purged_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('platform', 'ticket_id')
    )
    op.create_index('idx_tickets_applied_at', 'tickets', ['applied_at'], unique=False)
    op.create_index('idx_tickets_decided_at', 'tickets', ['decided_at'], unique=False)


def downgrade() -> None:
    op.drop_index('idx_tickets_decided_at', table_name='tickets')
    op.drop_index('idx_tickets_applied_at', table_name='tickets')
    op.drop_table('tickets')
    op.drop_table('oauth_users')
    op.drop_table('oauth_tokens')
    op.drop_table('models')
    op.drop_index('idx_login_failures_last_at', table_name='login_failures')
    op.drop_table('login_failures')
    op.drop_table('locks')
    op.drop_index('idx_llm_calls_at', table_name='llm_calls')
    op.drop_table('llm_calls')
    op.drop_table('install_secrets')
    op.drop_table('history')
    op.drop_index('idx_group_changes_platform_ticket_id', table_name='group_changes')
    op.drop_index('idx_group_changes_event_id', table_name='group_changes')
    op.drop_table('group_changes')
    op.drop_index('idx_events_state_due_at', table_name='events')
    op.drop_index('idx_events_platform_dedup_key', table_name='events')
    op.drop_table('events')
    op.drop_index('idx_corrections_rerouted_at', table_name='corrections')
    op.drop_index('idx_corrections_platform_ticket_id_change_id', table_name='corrections')
    op.drop_table('corrections')
    op.drop_table('config_changes')
