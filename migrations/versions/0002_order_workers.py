"""Order workers: payments, inventory and shipping, each in its own schema with its own inbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Must match consumers/{payments,inventory,shipping}/tables.py (tests/integration checks).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMAS = ("payments", "inventory", "shipping")


def _inbox(schema: str) -> None:
    # reply_* are NULL only inside the transaction that claims the row (consumers/inbox.py).
    op.create_table(
        "inbox",
        sa.Column("message_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("command_type", sa.String(100), nullable=False),
        sa.Column("reply_type", sa.String(100)),
        sa.Column("reply_body", sa.LargeBinary),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        schema=schema,
    )


def _payments() -> None:
    op.create_table(
        "customer_limits",
        sa.Column("customer_id", sa.String(200), primary_key=True),
        sa.Column("limit_cents", sa.BigInteger, nullable=False),
        sa.CheckConstraint("limit_cents >= 0", name="ck_customer_limits_non_negative"),
        schema="payments",
    )
    op.create_table(
        "ledger",
        sa.Column("entry_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("order_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("payment_id", sa.String(200)),
        sa.Column("customer_id", sa.String(200)),
        sa.Column("currency", sa.String(3)),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('charge', 'refund', 'void')", name="ck_ledger_kind"),
        sa.CheckConstraint("amount_cents >= 0", name="ck_ledger_amount_non_negative"),
        schema="payments",
    )
    op.create_index("ix_ledger_order", "ledger", ["order_id"], schema="payments")
    for name, kind in (("uq_ledger_one_charge", "charge"), ("uq_ledger_one_void", "void")):
        op.create_index(
            name,
            "ledger",
            ["order_id"],
            unique=True,
            schema="payments",
            postgresql_where=sa.text(f"kind = '{kind}'"),
        )


def _inventory() -> None:
    op.create_table(
        "stock",
        sa.Column("sku", sa.String(200), primary_key=True),
        sa.Column("on_hand", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("on_hand >= 0", name="ck_stock_on_hand_non_negative"),
        sa.CheckConstraint("reserved >= 0", name="ck_stock_reserved_non_negative"),
        schema="inventory",
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('reserved', 'released')", name="ck_orders_status"),
        schema="inventory",
    )
    op.create_table(
        "reservations",
        sa.Column(
            "order_id",
            sa.String(200),
            sa.ForeignKey("inventory.orders.order_id"),
            primary_key=True,
        ),
        sa.Column("sku", sa.String(200), sa.ForeignKey("inventory.stock.sku"), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_reservations_quantity_positive"),
        schema="inventory",
    )


def _shipping() -> None:
    op.create_table(
        "shipments",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("country", sa.String(2)),
        sa.Column("tracking_number", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('created', 'cancelled')", name="ck_shipments_status"),
        schema="shipping",
    )


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        _inbox(schema)
    _payments()
    _inventory()
    _shipping()


def downgrade() -> None:
    for schema in reversed(SCHEMAS):
        op.execute(f"DROP SCHEMA {schema} CASCADE")
