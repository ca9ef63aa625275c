"""Document approval workers: documents (tiers, drafts, finals, library, master index), approvals.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Must match consumers/{documents,approvals}/tables.py (tests/integration checks). The approval
tiers are seeded here and are data from then on: operators edit SLAs, escalation windows, role
chains and criteria with SQL, no deploy needed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.String(100)
SCHEMAS = ("documents", "approvals")

# (tier, name, SLA hours, escalation hours, roles (most senior last), object types, pii,
#  financial, critical). A tier matches on any criterion; the highest matching tier applies.
TIERS = (
    (1, "standard schema changes", 24, 12, ["data_steward"], [], False, False, False),
    (
        2,
        "tables, views and procedures",
        48,
        24,
        ["data_steward", "dba"],
        ["table", "view", "procedure"],
        False,
        False,
        False,
    ),
    (
        3,
        "PII or financial data",
        72,
        36,
        ["data_steward", "dba", "compliance"],
        [],
        True,
        True,
        False,
    ),
    (
        4,
        "critical systems",
        120,
        60,
        ["data_steward", "dba", "compliance", "governance_lead"],
        [],
        False,
        False,
        True,
    ),
)


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


def _timestamps(*names: str) -> list[sa.Column[Any]]:
    return [sa.Column(name, TS, nullable=False, server_default=sa.func.now()) for name in names]


def _change_key() -> list[sa.Column[Any]]:
    return [
        sa.Column("document_id", ID, primary_key=True),
        sa.Column("change_id", ID, primary_key=True),
    ]


def _tiers() -> None:
    tiers = op.create_table(
        "approval_tiers",
        sa.Column("tier", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sla_hours", sa.Integer, nullable=False),
        sa.Column("escalation_hours", sa.Integer, nullable=False),
        sa.Column("roles", ARRAY(sa.String(64)), nullable=False),
        sa.Column("object_types", ARRAY(sa.String(64)), nullable=False),
        sa.Column("on_pii", sa.Boolean, nullable=False),
        sa.Column("on_financial", sa.Boolean, nullable=False),
        sa.Column("on_critical", sa.Boolean, nullable=False),
        sa.CheckConstraint("tier BETWEEN 1 AND 99", name="ck_approval_tiers_tier"),
        sa.CheckConstraint(
            "sla_hours > 0 AND escalation_hours > 0", name="ck_approval_tiers_hours"
        ),
        sa.CheckConstraint("cardinality(roles) BETWEEN 1 AND 20", name="ck_approval_tiers_roles"),
        schema="documents",
    )
    columns = ("tier", "name", "sla_hours", "escalation_hours", "roles", "object_types")
    flags = ("on_pii", "on_financial", "on_critical")
    op.bulk_insert(tiers, [dict(zip((*columns, *flags), row, strict=True)) for row in TIERS])


def _documents() -> None:
    _tiers()
    op.create_table(
        "drafts",
        *_change_key(),
        sa.Column("draft_version", sa.Integer, nullable=False),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("quality_score", sa.Float, nullable=False),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps("created_at", "updated_at"),
        sa.UniqueConstraint("document_id", "draft_version", name="uq_drafts_version"),
        sa.CheckConstraint("status IN ('generated', 'deleted')", name="ck_drafts_status"),
        schema="documents",
    )
    op.create_table(
        "finals",
        *_change_key(),
        sa.Column("final_version", sa.Integer, nullable=False),
        sa.Column("draft_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps("created_at", "updated_at"),
        sa.UniqueConstraint("document_id", "final_version", name="uq_finals_version"),
        sa.CheckConstraint("status IN ('generated', 'deleted')", name="ck_finals_status"),
        schema="documents",
    )
    op.create_table(
        "library",
        *_change_key(),
        sa.Column("final_version", sa.Integer, nullable=False),
        sa.Column("location", sa.String(200), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps("filed_at", "updated_at"),
        sa.CheckConstraint("status IN ('filed', 'deleted')", name="ck_library_status"),
        schema="documents",
    )
    op.create_table(
        "master_index",
        sa.Column("document_id", ID, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("change_id", ID, nullable=False),
        sa.Column("final_version", sa.Integer, nullable=False),
        sa.Column("location", sa.String(200), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        *_timestamps("updated_at"),
        schema="documents",
    )
    op.create_table(
        "master_index_versions",
        sa.Column("document_id", ID, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("change_id", ID, nullable=False),
        sa.Column("final_version", sa.Integer, nullable=False),
        sa.Column("location", sa.String(200), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("previous_version", sa.Integer),
        *_timestamps("created_at"),
        sa.Column("restored_at", TS),
        sa.UniqueConstraint("document_id", "change_id", name="uq_master_index_versions_change"),
        schema="documents",
    )
    op.create_table(
        "voided",
        *_change_key(),
        sa.Column("step", sa.String(16), primary_key=True),
        *_timestamps("created_at"),
        sa.CheckConstraint("step IN ('draft', 'final', 'filing', 'index')", name="ck_voided_step"),
        schema="documents",
    )


def _approvals() -> None:
    op.create_table(
        "requests",
        *_change_key(),
        sa.Column("role", sa.String(64), primary_key=True),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("tier", sa.Integer),
        sa.Column("respond_by", TS),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps("requested_at", "updated_at"),
        sa.CheckConstraint("status IN ('open', 'approved', 'released')", name="ck_requests_status"),
        schema="approvals",
    )
    op.create_table(
        "escalations",
        *_change_key(),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("pending_roles", ARRAY(sa.String(64)), nullable=False),
        sa.Column("decide_by", TS, nullable=False),
        *_timestamps("escalated_at"),
        schema="approvals",
    )
    op.create_table(
        "decisions",
        *_change_key(),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("signoffs", JSONB, nullable=False),
        *_timestamps("recorded_at"),
        sa.CheckConstraint("route IN ('auto', 'single', 'full')", name="ck_decisions_route"),
        schema="approvals",
    )


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        _inbox(schema)
    _documents()
    _approvals()


def downgrade() -> None:
    for schema in reversed(SCHEMAS):
        op.execute(f"DROP SCHEMA {schema} CASCADE")
