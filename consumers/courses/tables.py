"""Courses' tables (schema `courses`). DDL: migrations/versions/0003_enrollment.py.

Invariant: a course's `seats_taken` equals the number of its seats whose status is 'confirmed',
and never exceeds its capacity (the CHECK is the backstop for the course-row lock).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from consumers.inbox import inbox_table

SCHEMA = "courses"
metadata = MetaData(schema=SCHEMA)

inbox = inbox_table(metadata)

courses = Table(
    "courses",
    metadata,
    Column("course_id", String(128), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("seats_taken", Integer, nullable=False, server_default="0"),
    Column("access_open", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("capacity >= 0", name="ck_courses_capacity_non_negative"),
    CheckConstraint(
        "seats_taken >= 0 AND seats_taken <= capacity", name="ck_courses_seats_within_capacity"
    ),
)

# One row per (course, user), ever: a confirmed seat, or a 'released' one (released after it was
# confirmed, or a void marker written by a release that overtook its confirmation).
seats = Table(
    "seats",
    metadata,
    Column("course_id", String(128), ForeignKey("courses.courses.course_id"), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('confirmed', 'released')", name="ck_seats_status"),
)

# Same shape: 'revoked' is also the void marker of a revoke that overtook its grant.
access_grants = Table(
    "access_grants",
    metadata,
    Column("course_id", String(128), ForeignKey("courses.courses.course_id"), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("saga_id", UUID(as_uuid=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('granted', 'revoked')", name="ck_access_grants_status"),
)
