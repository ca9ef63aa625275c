"""Inventory's tables (schema `inventory`). DDL: migrations/versions/0002_order_workers.py.

Invariant: for every sku, on_hand + reserved only changes by seeding, and `reserved` equals the
sum of the reservations of orders whose status is 'reserved'.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

from consumers.inbox import inbox_table

SCHEMA = "inventory"
metadata = MetaData(schema=SCHEMA)

inbox = inbox_table(metadata)

stock = Table(
    "stock",
    metadata,
    Column("sku", String(200), primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False, server_default="0"),
    CheckConstraint("on_hand >= 0", name="ck_stock_on_hand_non_negative"),
    CheckConstraint("reserved >= 0", name="ck_stock_reserved_non_negative"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(200), primary_key=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('reserved', 'released')", name="ck_orders_status"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(200), ForeignKey("inventory.orders.order_id"), primary_key=True),
    Column("sku", String(200), ForeignKey("inventory.stock.sku"), primary_key=True),
    Column("quantity", Integer, nullable=False),
    CheckConstraint("quantity > 0", name="ck_reservations_quantity_positive"),
)
