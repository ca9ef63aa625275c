"""The outbox's dispatch lease: rows the writing process publishes itself, for a while.

Revision ID: 0009_dispatch_lease
Revises: 0008_temporary_privilege
Create Date: 2026-12-06

The orchestrator's intake publishes the commands of a batch right after the batch commits, from
the rows it has in memory (orchestrator/relay.py `dispatch`). `dispatch_until` (the database's
clock) tells the relay loop to leave such a row alone until then, so that nobody claims,
locks or publishes it twice meanwhile. NULL: the relay loop's to publish now. A nullable
column with no default is a change of the catalog only: no table rewrite, no long lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_dispatch_lease"
down_revision = "0008_temporary_privilege"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "outbox",
        sa.Column("dispatch_until", sa.DateTime(timezone=True), nullable=True),
        schema="saga",
    )


def downgrade() -> None:
    op.drop_column("outbox", "dispatch_until", schema="saga")
