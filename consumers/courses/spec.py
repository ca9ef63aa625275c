"""The courses worker: capacity, seats and access grants, in schema `courses`."""

from __future__ import annotations

from consumers.courses import tables
from consumers.courses.handlers import make_handlers
from consumers.runtime import WorkerSpec
from contracts.routes import WORKER_COMMANDS

SPEC = WorkerSpec(
    name="courses",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["courses"],
    make_handlers=make_handlers,
    description=(
        "checks capacity, confirms and releases seats, grants and revokes course access "
        "(CheckCourseCapacity, ConfirmEnrollment, ReleaseSeat, GrantCourseAccess, "
        "RevokeCourseAccess)"
    ),
)
