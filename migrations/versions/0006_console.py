"""Operations console (schema `console`): operators, sessions, login failures, audit trail,
approvals, replay jobs and the parked-message index.

Revision ID: 0006_console
Revises: 0005
Create Date: 2026-12-05

Must match sagaline_tools/console/tables.py (tests/integration checks). The parked-message
index is a read model of the parking queues (see sagaline_tools/console/index.py): the broker
stays the only place a parked message is replayed or purged from.

When the console's database roles exist (deploy/postgres/roles.sql) they are granted what they
need and nothing more: `sagaline_console` reads and writes the saga tables (operator actions)
and its own schema; `sagaline_console_viewer` (the read-only console) only reads the saga
tables. Neither can touch the workers' tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0006_console"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
S = "console"
NAME = sa.String(100)

_GRANTS = """
DO $grants$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['sagaline_console', 'sagaline_console_viewer'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            RAISE NOTICE 'role % does not exist: no grants (deploy/postgres/roles.sql)', role_name;
            CONTINUE;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA saga, console TO %I', role_name);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA saga TO %I', role_name);
        EXECUTE format(
            'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA console TO %I',
            role_name);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA console TO %I', role_name);
        EXECUTE format('GRANT SELECT ON public.alembic_version TO %I', role_name);
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'sagaline_console') THEN
        GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA saga TO sagaline_console;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA saga TO sagaline_console;
    END IF;
END
$grants$;
"""


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {S}")
    op.create_table(
        "operators",
        sa.Column("name", NAME, primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled_at", TS),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="ck_operators_role"),
        schema=S,
    )
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.LargeBinary, primary_key=True),
        sa.Column(
            "operator",
            NAME,
            sa.ForeignKey(f"{S}.operators.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        schema=S,
    )
    op.create_index("ix_sessions_expires", "sessions", ["expires_at"], schema=S)
    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", NAME, nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        schema=S,
    )
    op.create_index("ix_login_failures_name", "login_failures", ["name", "at"], schema=S)
    op.create_index("ix_login_failures_client", "login_failures", ["client", "at"], schema=S)
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("saga_id", UUID(as_uuid=True)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", JSONB, nullable=False),
        schema=S,
    )
    op.create_index("ix_audit_at", "audit", ["at"], schema=S)
    op.create_index(
        "ix_audit_saga",
        "audit",
        ["saga_id", "id"],
        schema=S,
        postgresql_where=sa.text("saga_id IS NOT NULL"),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("params", JSONB, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("requested_by", NAME, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", NAME),
        sa.Column("decided_at", TS),
        sa.Column("result", sa.Text),
        schema=S,
    )
    op.create_index("ix_approvals_status", "approvals", ["status", "id"], schema=S)
    op.create_table(
        "replay_jobs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("selection", JSONB, nullable=False),
        sa.Column("rate", sa.Float, nullable=False),
        sa.Column("stop_on_failure", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("runner", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("replayed", sa.Integer, nullable=False),
        sa.Column("refailed", sa.Integer, nullable=False),
        sa.Column("gone", sa.Integer, nullable=False),
        sa.Column("created_by", NAME, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS),
        schema=S,
    )
    op.create_index("ix_replay_jobs_status", "replay_jobs", ["status", "id"], schema=S)
    op.create_table(
        "replay_items",
        sa.Column(
            "job_id",
            sa.BigInteger,
            sa.ForeignKey(f"{S}.replay_jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("message_key", sa.String(200), primary_key=True),
        sa.Column("replays", sa.Integer, nullable=False),
        sa.Column("message_id", sa.String(200)),
        sa.Column("message_type", sa.String(200)),
        sa.Column("saga_id", UUID(as_uuid=True)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("done_at", TS),
        schema=S,
    )
    op.create_index("ix_replay_items_state", "replay_items", ["job_id", "state"], schema=S)
    op.create_table(
        "parked",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("message_key", sa.String(200), nullable=False),
        sa.Column("replays", sa.Integer, nullable=False),
        sa.Column("copies", sa.Integer, nullable=False),
        sa.Column("message_id", sa.String(200)),
        sa.Column("correlation_id", sa.String(200)),
        sa.Column("saga_id", UUID(as_uuid=True)),
        sa.Column("message_type", sa.String(200)),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(16), nullable=False),
        sa.Column("error_pattern", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("original_queue", sa.String(200)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_failed_at", sa.Text),
        sa.Column("last_failed_at", sa.Text),
        sa.Column("parked_at", TS, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("body_truncated", sa.Boolean, nullable=False),
        sa.Column("missing_since", TS),
        sa.UniqueConstraint("queue", "message_key", "replays", name="uq_parked_copy"),
        schema=S,
    )
    op.create_index("ix_parked_group", "parked", ["queue", "reason", "fingerprint"], schema=S)
    op.create_index("ix_parked_order", "parked", ["parked_at", "id"], schema=S)
    op.create_index(
        "ix_parked_saga",
        "parked",
        ["saga_id"],
        schema=S,
        postgresql_where=sa.text("saga_id IS NOT NULL"),
    )
    op.execute(_GRANTS)


def downgrade() -> None:
    op.execute(f"DROP SCHEMA {S} CASCADE")
