"""Enrollment workers: courses and notifications, each in its own schema with its own inbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Must match consumers/{courses,notifications}/tables.py (tests/integration checks).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMAS = ("courses", "notifications")


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


def _per_enrollment(name: str, statuses: tuple[str, str]) -> None:
    """seats and access_grants: one row per (course, user), with its status and saga."""
    values = ", ".join(f"'{s}'" for s in statuses)
    op.create_table(
        name,
        sa.Column(
            "course_id",
            sa.String(128),
            sa.ForeignKey("courses.courses.course_id"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(f"status IN ({values})", name=f"ck_{name}_status"),
        schema="courses",
    )


def _courses() -> None:
    op.create_table(
        "courses",
        sa.Column("course_id", sa.String(128), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("seats_taken", sa.Integer, nullable=False, server_default="0"),
        sa.Column("access_open", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("capacity >= 0", name="ck_courses_capacity_non_negative"),
        # The backstop for the course-row lock: a course can never be over-sold.
        sa.CheckConstraint(
            "seats_taken >= 0 AND seats_taken <= capacity",
            name="ck_courses_seats_within_capacity",
        ),
        schema="courses",
    )
    _per_enrollment("seats", ("confirmed", "released"))
    _per_enrollment("access_grants", ("granted", "revoked"))


def _notifications() -> None:
    op.create_table(
        "emails",
        sa.Column("email_id", sa.String(64), primary_key=True),
        sa.Column("saga_id", UUID(as_uuid=True), nullable=False),
        sa.Column("template", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("course_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "template IN ('welcome', 'enrollment-cancelled')", name="ck_emails_template"
        ),
        sa.UniqueConstraint("saga_id", "template", name="uq_emails_saga_template"),
        schema="notifications",
    )


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        _inbox(schema)
    _courses()
    _notifications()


def downgrade() -> None:
    for schema in reversed(SCHEMAS):
        op.execute(f"DROP SCHEMA {schema} CASCADE")
