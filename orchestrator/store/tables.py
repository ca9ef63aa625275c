"""The orchestrator's tables (schema `saga`), as SQLAlchemy Core objects for queries.

The DDL lives in migrations/; these definitions must match it (tests/integration checks).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
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

SCHEMA = "saga"
metadata = MetaData(schema=SCHEMA)

instances = Table(
    "instances",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("workflow", String(64), nullable=False),
    Column("business_key", String(400), nullable=False),
    Column("state", String(64), nullable=False),
    Column("data", JSONB, nullable=False),
    Column("runtime", JSONB, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    # The workflow version whose machine decides this saga (0007_definition_version).
    Column("definition_version", Integer, nullable=False, server_default=text("1")),
    UniqueConstraint("workflow", "business_key", name="uq_instances_business_key"),
    Index(
        "ix_instances_active",
        "workflow",
        "state",
        "updated_at",
        postgresql_where=text("finished_at IS NULL"),
    ),
)

inbox = Table(
    "inbox",
    metadata,
    Column("message_id", UUID(as_uuid=True), primary_key=True),
    Column("saga_id", UUID(as_uuid=True)),
    Column("message_type", String(100), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("message_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("exchange", String(200), nullable=False),
    Column("routing_key", String(200), nullable=False),
    Column("message_type", String(100), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),
    # Until when the process that wrote the row publishes it itself (0009_dispatch_lease).
    Column("dispatch_until", DateTime(timezone=True)),
    Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
)

timers = Table(
    "timers",
    metadata,
    Column("saga_id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("message_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_timers_due", "due_at"),
)

history = Table(
    "history",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("version", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("message_id", UUID(as_uuid=True)),
    Column("message_type", String(100), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("from_state", String(64)),
    Column("to_state", String(64), nullable=False),
    Column("commands", JSONB, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("note", Text, nullable=False),
    Index("ix_history_saga", "saga_id", "id"),
)
