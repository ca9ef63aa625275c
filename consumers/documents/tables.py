"""Documents' tables (schema `documents`). DDL: migrations/versions/0004_documents.py.

The document library is a table (`library`), not a directory: filing and its undo then commit in
the worker's one transaction with the inbox row, and tests read it with SQL.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from consumers.inbox import inbox_table

SCHEMA = "documents"
metadata = MetaData(schema=SCHEMA)

inbox = inbox_table(metadata)

ID = String(100)
TS = DateTime(timezone=True)

approval_tiers = Table(
    "approval_tiers",
    metadata,
    Column("tier", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("sla_hours", Integer, nullable=False),
    Column("escalation_hours", Integer, nullable=False),
    # The full approval chain, most senior role last.
    Column("roles", ARRAY(String(64)), nullable=False),
    # Criteria: a tier matches on any of them; a tier with none matches everything (the base).
    Column("object_types", ARRAY(String(64)), nullable=False),
    Column("on_pii", Boolean, nullable=False),
    Column("on_financial", Boolean, nullable=False),
    Column("on_critical", Boolean, nullable=False),
    CheckConstraint("tier BETWEEN 1 AND 99", name="ck_approval_tiers_tier"),
    CheckConstraint("sla_hours > 0 AND escalation_hours > 0", name="ck_approval_tiers_hours"),
    CheckConstraint("cardinality(roles) BETWEEN 1 AND 20", name="ck_approval_tiers_roles"),
)

drafts = Table(
    "drafts",
    metadata,
    Column("document_id", ID, primary_key=True),
    Column("change_id", ID, primary_key=True),
    Column("draft_version", Integer, nullable=False),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("title", String(200), nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("quality_score", Float, nullable=False),
    Column("tier", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("document_id", "draft_version", name="uq_drafts_version"),
    CheckConstraint("status IN ('generated', 'deleted')", name="ck_drafts_status"),
)

finals = Table(
    "finals",
    metadata,
    Column("document_id", ID, primary_key=True),
    Column("change_id", ID, primary_key=True),
    Column("final_version", Integer, nullable=False),
    Column("draft_version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    UniqueConstraint("document_id", "final_version", name="uq_finals_version"),
    CheckConstraint("status IN ('generated', 'deleted')", name="ck_finals_status"),
)

library = Table(
    "library",
    metadata,
    Column("document_id", ID, primary_key=True),
    Column("change_id", ID, primary_key=True),
    Column("final_version", Integer, nullable=False),
    Column("location", String(200), nullable=False),
    Column("title", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("filed_at", TS, nullable=False, server_default=func.now()),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('filed', 'deleted')", name="ck_library_status"),
)

master_index = Table(
    "master_index",
    metadata,
    Column("document_id", ID, primary_key=True),
    # The entry's current version: a row of master_index_versions with the same content.
    Column("version", Integer, nullable=False),
    Column("change_id", ID, nullable=False),
    Column("final_version", Integer, nullable=False),
    Column("location", String(200), nullable=False),
    Column("title", String(200), nullable=False),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
)

master_index_versions = Table(
    "master_index_versions",
    metadata,
    Column("document_id", ID, primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("change_id", ID, nullable=False),
    Column("final_version", Integer, nullable=False),
    Column("location", String(200), nullable=False),
    Column("title", String(200), nullable=False),
    # The entry's version before this update (NULL: the document had no entry).
    Column("previous_version", Integer),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("restored_at", TS),
    UniqueConstraint("document_id", "change_id", name="uq_master_index_versions_change"),
)

voided = Table(
    "voided",
    metadata,
    Column("document_id", ID, primary_key=True),
    Column("change_id", ID, primary_key=True),
    Column("step", String(16), primary_key=True),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    CheckConstraint("step IN ('draft', 'final', 'filing', 'index')", name="ck_voided_step"),
)
