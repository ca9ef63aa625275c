"""The console's tables (schema `console`), as SQLAlchemy Core objects.

The DDL is migrations/versions/0006_console.py; these definitions must match it
(tests/integration/test_console_schema.py checks).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

SCHEMA = "console"
metadata = MetaData(schema=SCHEMA)
TS = DateTime(timezone=True)

operators = Table(
    "operators",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("disabled_at", TS),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column(
        "operator", String(100), ForeignKey("operators.name", ondelete="CASCADE"), nullable=False
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Index("ix_sessions_expires", "expires_at"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("client", String(64), nullable=False),
    Column("at", TS, nullable=False),
    Index("ix_login_failures_name", "name", "at"),
    Index("ix_login_failures_client", "client", "at"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("saga_id", UUID(as_uuid=True)),
    Column("reason", Text, nullable=False),
    Column("details", JSONB, nullable=False),
    Index("ix_audit_at", "at"),
    Index("ix_audit_saga", "saga_id", "id", postgresql_where=text("saga_id IS NOT NULL")),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("action", String(64), nullable=False),
    Column("params", JSONB, nullable=False),
    Column("summary", Text, nullable=False),
    Column("requested_by", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("requested_at", TS, nullable=False),
    Column("status", String(16), nullable=False),
    Column("decided_by", String(100)),
    Column("decided_at", TS),
    Column("result", Text),
    Index("ix_approvals_status", "status", "id"),
)

replay_jobs = Table(
    "replay_jobs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("queue", String(200), nullable=False),
    Column("selection", JSONB, nullable=False),
    Column("rate", Float, nullable=False),
    Column("stop_on_failure", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("runner", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("replayed", Integer, nullable=False),
    Column("refailed", Integer, nullable=False),
    Column("gone", Integer, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("heartbeat_at", TS),
    Index("ix_replay_jobs_status", "status", "id"),
)

replay_items = Table(
    "replay_items",
    metadata,
    Column(
        "job_id", BigInteger, ForeignKey("replay_jobs.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("message_key", String(200), primary_key=True),
    Column("replays", Integer, nullable=False),
    Column("message_id", String(200)),
    Column("message_type", String(200)),
    Column("saga_id", UUID(as_uuid=True)),
    Column("state", String(16), nullable=False),
    Column("done_at", TS),
    Index("ix_replay_items_state", "job_id", "state"),
)

parked = Table(
    "parked",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("queue", String(200), nullable=False),
    Column("message_key", String(200), nullable=False),
    Column("replays", Integer, nullable=False),
    Column("copies", Integer, nullable=False),
    Column("message_id", String(200)),
    Column("correlation_id", String(200)),
    Column("saga_id", UUID(as_uuid=True)),
    Column("message_type", String(200)),
    Column("reason", String(64), nullable=False),
    Column("fingerprint", String(16), nullable=False),
    Column("error_pattern", Text, nullable=False),
    Column("error", Text),
    Column("original_queue", String(200)),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", Text),
    Column("last_failed_at", Text),
    Column("parked_at", TS, nullable=False),
    Column("size", Integer, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("body_truncated", Boolean, nullable=False),
    Column("missing_since", TS),
    UniqueConstraint("queue", "message_key", "replays", name="uq_parked_copy"),
    Index("ix_parked_group", "queue", "reason", "fingerprint"),
    Index("ix_parked_order", "parked_at", "id"),
    Index("ix_parked_saga", "saga_id", postgresql_where=text("saga_id IS NOT NULL")),
)
