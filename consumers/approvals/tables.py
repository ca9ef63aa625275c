"""Approvals' tables (schema `approvals`). DDL: migrations/versions/0004_documents.py."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from consumers.inbox import inbox_table

SCHEMA = "approvals"
metadata = MetaData(schema=SCHEMA)

inbox = inbox_table(metadata)

ID = String(100)
TS = DateTime(timezone=True)

requests = Table(
    "requests",
    metadata,
    Column("document_id", ID, primary_key=True),
    Column("change_id", ID, primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    # NULL on a request released before it was opened (see rules.decide_release).
    Column("tier", Integer),
    Column("respond_by", TS),
    Column("status", String(16), nullable=False),
    Column("requested_at", TS, nullable=False, server_default=func.now()),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('open', 'approved', 'released')", name="ck_requests_status"),
)

escalations = Table(
    "escalations",
    metadata,
    Column("document_id", ID, primary_key=True),
    Column("change_id", ID, primary_key=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("tier", Integer, nullable=False),
    Column("pending_roles", ARRAY(String(64)), nullable=False),
    Column("decide_by", TS, nullable=False),
    Column("escalated_at", TS, nullable=False, server_default=func.now()),
)

decisions = Table(
    "decisions",
    metadata,
    Column("document_id", ID, primary_key=True),
    Column("change_id", ID, primary_key=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("route", String(16), nullable=False),
    # [{"role": ..., "approver": ...}]: who signed off, in the order they answered.
    Column("signoffs", JSONB, nullable=False),
    Column("recorded_at", TS, nullable=False, server_default=func.now()),
    CheckConstraint("route IN ('auto', 'single', 'full')", name="ck_decisions_route"),
)
