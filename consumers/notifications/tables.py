"""Notifications' tables (schema `notifications`). DDL: migrations/versions/0003_enrollment.py."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

from consumers.inbox import inbox_table

SCHEMA = "notifications"
metadata = MetaData(schema=SCHEMA)

inbox = inbox_table(metadata)

emails = Table(
    "emails",
    metadata,
    Column("email_id", String(64), primary_key=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("template", String(32), nullable=False),
    Column("recipient", String(254), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("course_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("template IN ('welcome', 'enrollment-cancelled')", name="ck_emails_template"),
    # The backstop for the per-saga lock: each template at most once per saga.
    UniqueConstraint("saga_id", "template", name="uq_emails_saga_template"),
)
