"""Deskroute's tables, as SQLAlchemy Core metadata: what the migrations build, and what `db copy` moves.

Times are seconds since the epoch (double precision), ids are strings as the helpdesks give them, and
JSON documents (a classification, a decision) are text: both dialects store and compare them alike.
Index names are those the pre-Alembic SQLite schema used, so an old install's file matches this one.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Float, Index, Integer, LargeBinary, MetaData, Table, Text

metadata = MetaData()
# A 64-bit id on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the rowid (and 64-bit anyway).
Id = BigInteger().with_variant(Integer(), "sqlite")


def _pk() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


events = Table(
    "events", metadata, _pk(),
    Column("platform", Text, nullable=False), Column("kind", Text, nullable=False),
    Column("ticket_id", Text, nullable=False), Column("dedup_key", Text, nullable=False), Column("source_id", Text),
    Column("data", Text), Column("received_at", Float, nullable=False), Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"), Column("due_at", Float, nullable=False),
    Column("lease_owner", Text), Column("outcome", Text), Column("last_error", Text), Column("finished_at", Float),
    Index("idx_events_platform_dedup_key", "platform", "dedup_key", unique=True),
    Index("idx_events_state_due_at", "state", "due_at"),
)

tickets = Table(
    "tickets", metadata,
    Column("platform", Text, primary_key=True), Column("ticket_id", Text, primary_key=True),
    Column("event_id", Id, nullable=False), Column("first_seen_at", Float, nullable=False),
    Column("state", Text, nullable=False), Column("category", Text), Column("confidence", Float), Column("tier", Text),
    Column("guardrail", Text), Column("group_id", Text), Column("priority", Text), Column("triage", Integer),
    Column("classification", Text), Column("decision", Text), Column("model_version", Text),
    Column("decided_at", Float), Column("applied_at", Float), Column("last_error", Text),
    Column("prompt_version", Text), Column("training_text", Text), Column("reroute_checked_at", Float),
    Column("text_purged_at", Float),
    Index("idx_tickets_decided_at", "decided_at"),
    Index("idx_tickets_applied_at", "applied_at"),
)

group_changes = Table(
    "group_changes", metadata, _pk(),
    Column("event_id", Id), Column("platform", Text), Column("ticket_id", Text), Column("group_id", Text),
    Column("previous_group_id", Text), Column("actor_id", Text), Column("via", Text), Column("occurred_at", Text),
    Column("received_at", Float),
    Index("idx_group_changes_event_id", "event_id", unique=True),
    Index("idx_group_changes_platform_ticket_id", "platform", "ticket_id"),
)

models = Table(
    "models", metadata,
    Column("version", Integer, primary_key=True, autoincrement=True), Column("created_at", Float),
    Column("labels", Text), Column("n_examples", Integer), Column("metrics", Text), Column("source", Text),
    Column("sha256", Text), Column("blob", LargeBinary), Column("active", Integer),
)

llm_calls = Table(
    "llm_calls", metadata, _pk(),
    Column("at", Float), Column("platform", Text), Column("ticket_id", Text), Column("model", Text),
    Column("outcome", Text), Column("prompt_version", Text), Column("latency_ms", Float),
    Column("input_tokens", Integer), Column("output_tokens", Integer), Column("cache_read_tokens", Integer),
    Column("cache_write_tokens", Integer), Column("cost_usd", Float), Column("error", Text),
    Index("idx_llm_calls_at", "at"),
)

corrections = Table(
    "corrections", metadata, _pk(),
    Column("platform", Text, nullable=False), Column("ticket_id", Text, nullable=False),
    Column("change_id", Text, nullable=False), Column("seq", Integer, nullable=False), Column("text", Text),
    Column("predicted_category", Text), Column("predicted_group_id", Text), Column("predicted_tier", Text),
    Column("predicted_confidence", Float), Column("previous_group_id", Text), Column("corrected_group_id", Text),
    Column("corrected_category", Text), Column("agent_id", Text), Column("via", Text), Column("routed_at", Float),
    Column("rerouted_at", Float), Column("status", Text, nullable=False), Column("label", Text),
    Column("reviewed_by", Text), Column("reviewed_at", Float), Column("created_at", Float),
    Column("comment", Text),  # an agent's word from the sidebar ("wrong: it's about refunds"), redacted
    Index("idx_corrections_platform_ticket_id_change_id", "platform", "ticket_id", "change_id", unique=True),
    Index("idx_corrections_rerouted_at", "rerouted_at"),
)

# Solved tickets imported from the helpdesk, labelled with their final group's category.
history = Table(
    "history", metadata,
    Column("platform", Text, primary_key=True), Column("ticket_id", Text, primary_key=True), Column("text", Text),
    Column("category", Text), Column("group_id", Text), Column("solved_at", Text), Column("imported_at", Float),
)

# What changed in the configuration, by whom, as a unified diff per file.
config_changes = Table(
    "config_changes", metadata, _pk(),
    Column("at", Float), Column("author", Text), Column("file", Text), Column("summary", Text), Column("diff", Text),
    Column("version", Integer),  # the configuration version the change made (none: a pre-0002 file edit)
)

# Every version of the configuration (taxonomy.yaml and each <platform>.yaml, whole); the newest is live.
config_versions = Table(
    "config_versions", metadata,
    Column("version", Integer, primary_key=True, autoincrement=True), Column("at", Float, nullable=False),
    Column("author", Text, nullable=False), Column("summary", Text, nullable=False),
    Column("files", Text, nullable=False),  # JSON: {file name: YAML text}
)

# Each helpdesk's group list as last fetched (id -> name, JSON; null: it couldn't be fetched), shared so
# that every process's admin pages agree and the helpdesk is asked once a minute per install.
helpdesk_groups = Table(
    "helpdesk_groups", metadata,
    Column("platform", Text, primary_key=True), Column("groups", Text), Column("fetched_at", Float, nullable=False),
)

# One row per helpdesk: its OAuth token, encrypted (connector/tokens.py); never a plaintext secret.
oauth_tokens = Table(
    "oauth_tokens", metadata,
    Column("platform", Text, primary_key=True), Column("grant", Text), Column("client_id", Text),
    Column("key_id", Text), Column("access_token", Text), Column("refresh_token", Text), Column("scope", Text),
    Column("issued_at", Float), Column("expires_at", Float), Column("refresh_expires_at", Float),
    Column("connected_at", Float), Column("connected_as", Text),
    Column("generation", Integer, nullable=False, server_default="0"), Column("updated_at", Float),
    Column("last_error", Text), Column("last_error_at", Float),
)

# Every helpdesk user Deskroute has acted as: their audit entries are Deskroute's own writes.
oauth_users = Table(
    "oauth_users", metadata,
    Column("platform", Text, primary_key=True), Column("user_id", Text, primary_key=True),
    Column("first_seen", Float),
)

# Named leases shared by every process (who may renew a token; on SQLite, who runs the scheduler).
locks = Table(
    "locks", metadata,
    Column("name", Text, primary_key=True), Column("owner", Text), Column("until", Float),
)

# Random secrets made once per install and shared by every process (the session-signing key).
install_secrets = Table(
    "install_secrets", metadata,
    Column("name", Text, primary_key=True), Column("value", Text), Column("created_at", Float),
)

# Recent failed admin logins per client address, shared by every process; pruned as it goes.
login_failures = Table(
    "login_failures", metadata,
    Column("client", Text, primary_key=True), Column("failures", Integer), Column("last_at", Float),
    Index("idx_login_failures_last_at", "last_at"),
)

# People who sign in to the admin UI by name (besides the shared DESKROUTE_ADMIN_PASSWORD), so that a
# review or an edit names who made it, one person's access can end without changing everyone's password,
# and a team lead can review corrections without being able to change the routing.
# The password is an scrypt hash with its own salt and parameters (connector/admin/gate.py).
admin_users = Table(
    "admin_users", metadata,
    Column("name", Text, primary_key=True),  # case-folded
    Column("password_hash", Text, nullable=False),
    Column("role", Text, nullable=False, server_default="lead"),  # connector/store/users.py ROLES
    Column("created_at", Float, nullable=False), Column("updated_at", Float, nullable=False),
    CheckConstraint("role IN ('lead', 'admin')", name="admin_users_role"),
)

# Tickets no category took: sent to triage (not by a guardrail, not an automatic reply), or moved by an
# agent to a group no category maps to. Their redacted text, kept within the retention period, is what
# taxonomy suggestions are clustered from (connector/suggest.py).
unrouted = Table(
    "unrouted", metadata,
    Column("platform", Text, primary_key=True), Column("ticket_id", Text, primary_key=True),
    Column("text", Text, nullable=False),  # redacted, the customer's own words
    Column("reason", Text, nullable=False),  # triage | unmapped
    Column("guess", Text), Column("guess_confidence", Float),  # the router's best guess, if it had one
    Column("group_id", Text),  # where Deskroute sent it
    Column("final_group_id", Text),  # where an agent moved it last (none: not moved, as far as we know)
    Column("created_at", Float, nullable=False), Column("moved_at", Float),
    Index("idx_unrouted_created_at", "created_at"),
)

# Each computation of taxonomy suggestions (the newest is shown): clusters as JSON, members by ticket key.
suggestions = Table(
    "suggestions", metadata, _pk(),
    Column("computed_at", Float, nullable=False), Column("n_tickets", Integer, nullable=False),
    Column("clusters", Text, nullable=False),
)

# What each retrain of the local model did (the newest are shown on the Model page): a skipped or failed
# retrain leaves no model behind, so without this only the worker's log would say why nothing changed.
retrains = Table(
    "retrains", metadata, _pk(),
    Column("started_at", Float, nullable=False), Column("finished_at", Float, nullable=False),
    Column("trigger", Text, nullable=False),  # schedule | admin | cli
    Column("outcome", Text, nullable=False),  # promoted | refused | kept inactive | skipped | failed
    Column("version", Integer), Column("candidate_f1", Float), Column("current_f1", Float),
    Column("n_holdout", Integer), Column("reason", Text, nullable=False),
)

# What `deskroute db copy` moves, parents first. Locks and login failures are moments, not records.
DURABLE = (events, tickets, group_changes, llm_calls, corrections, history, models, config_versions,
           config_changes, oauth_tokens, oauth_users, install_secrets, unrouted, suggestions, retrains,
           admin_users)
