"""Payments' tables (schema `payments`). DDL: migrations/versions/0002_order_workers.py."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from consumers.inbox import inbox_table

SCHEMA = "payments"
metadata = MetaData(schema=SCHEMA)

inbox = inbox_table(metadata)

customer_limits = Table(
    "customer_limits",
    metadata,
    Column("customer_id", String(200), primary_key=True),
    Column("limit_cents", BigInteger, nullable=False),
    CheckConstraint("limit_cents >= 0", name="ck_customer_limits_non_negative"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("entry_id", BigInteger, Identity(), primary_key=True),
    Column("order_id", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("payment_id", String(200)),
    Column("customer_id", String(200)),
    Column("currency", String(3)),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('charge', 'refund', 'void')", name="ck_ledger_kind"),
    CheckConstraint("amount_cents >= 0", name="ck_ledger_amount_non_negative"),
    Index("ix_ledger_order", "order_id"),
    # Backstops for the per-order lock: one charge and one void marker per order, ever.
    Index(
        "uq_ledger_one_charge", "order_id", unique=True, postgresql_where=text("kind = 'charge'")
    ),
    Index("uq_ledger_one_void", "order_id", unique=True, postgresql_where=text("kind = 'void'")),
)
