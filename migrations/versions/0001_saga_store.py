"""Saga store: instances, inbox, outbox, timers, history (schema `saga`).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS saga")
    op.create_table(
        "instances",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("business_key", sa.String(400), nullable=False),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("runtime", JSONB, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.UniqueConstraint("workflow", "business_key", name="uq_instances_business_key"),
        schema="saga",
    )
    op.create_index(
        "ix_instances_active",
        "instances",
        ["workflow", "state", "updated_at"],
        schema="saga",
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    op.create_table(
        "inbox",
        sa.Column("message_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("saga_id", UUID(as_uuid=True)),
        sa.Column("message_type", sa.String(100), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        schema="saga",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("exchange", sa.String(200), nullable=False),
        sa.Column("routing_key", sa.String(200), nullable=False),
        sa.Column("message_type", sa.String(100), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("published_at", TS),
        schema="saga",
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        schema="saga",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "timers",
        sa.Column("saga_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        schema="saga",
    )
    op.create_index("ix_timers_due", "timers", ["due_at"], schema="saga")
    op.create_table(
        "history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("message_id", UUID(as_uuid=True)),
        sa.Column("message_type", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(64)),
        sa.Column("to_state", sa.String(64), nullable=False),
        sa.Column("commands", JSONB, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        schema="saga",
    )
    op.create_index("ix_history_saga", "history", ["saga_id", "id"], schema="saga")


def downgrade() -> None:
    op.execute("DROP SCHEMA saga CASCADE")
