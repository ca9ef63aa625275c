"""Shipping's tables (schema `shipping`). DDL: migrations/versions/0002_order_workers.py."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, MetaData, String, Table, func
from sqlalchemy.dialects.postgresql import UUID

from consumers.inbox import inbox_table

SCHEMA = "shipping"
metadata = MetaData(schema=SCHEMA)

inbox = inbox_table(metadata)

shipments = Table(
    "shipments",
    metadata,
    Column("order_id", String(200), primary_key=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    # NULL on a cancelled marker written before any shipment was created.
    Column("country", String(2)),
    Column("tracking_number", String(64)),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('created', 'cancelled')", name="ck_shipments_status"),
)
