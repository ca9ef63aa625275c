"""Workflow versions: every saga records the version of its workflow's definition it runs under.

Revision ID: 0007_definition_version
Revises: 0006_console
Create Date: 2026-12-05

`saga.instances.definition_version` is the readable number of the machine that decides the saga
(orchestrator/workflows/versions/<workflow>/v<N>.json holds its hash). Every saga that exists
before this migration was started by the one definition there was: version 1. PostgreSQL 11+
adds a column with a constant default without rewriting the table, so this is instant at any
size. The default stays: an orchestrator replica of the previous release, still running during
a rolling deploy, inserts sagas without the column, and it only knows version 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_definition_version"
down_revision = "0006_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column("definition_version", sa.Integer, nullable=False, server_default="1"),
        schema="saga",
    )


def downgrade() -> None:
    op.drop_column("instances", "definition_version", schema="saga")
