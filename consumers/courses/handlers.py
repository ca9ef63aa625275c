"""Courses' command handlers and course helpers.

Lock order, the same in every transaction: the enrollment's advisory lock (course, user) first,
then the course row. The advisory lock serialises the commands of one enrollment (a release
racing its confirmation, a revoke racing its grant) even before any of their rows exist; the
course row lock (FOR UPDATE) serialises seat changes across enrollments, so the capacity check
inside a confirmation and its seat count update are one atomic step: seats are never over-sold.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.courses import rules
from consumers.courses.tables import SCHEMA, access_grants, courses, seats
from consumers.runtime import Handler, HandlerMap
from consumers.settings import WorkerSettings
from contracts.base import Command, ReplyEvent
from contracts.enrollment import (
    CheckCourseCapacity,
    ConfirmEnrollment,
    CourseAccessDenied,
    CourseAccessGranted,
    CourseAccessRevoked,
    CourseCapacityChecked,
    EnrollmentConfirmationFailed,
    EnrollmentConfirmed,
    GrantCourseAccess,
    ReleaseSeat,
    RevokeCourseAccess,
    SeatReleased,
)
from contracts.envelope import Envelope

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def lock_enrollment(conn: AsyncConnection, course_id: str, user_id: str) -> None:
    # Transaction-scoped; a hash collision only serialises two unrelated enrollments.
    await conn.execute(_LOCK, {"key": f"{SCHEMA}:enrollment:{course_id}/{user_id}"})


async def load_course(
    conn: AsyncConnection, course_id: str, *, for_update: bool = False
) -> rules.Course | None:
    query = select(
        courses.c.title, courses.c.capacity, courses.c.seats_taken, courses.c.access_open
    ).where(courses.c.course_id == course_id)
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    return None if row is None else rules.Course(row[0], row[1], row[2], row[3])


async def seat_status(
    conn: AsyncConnection, course_id: str, user_id: str
) -> rules.SeatStatus | None:
    value = await conn.scalar(
        select(seats.c.status).where(seats.c.course_id == course_id, seats.c.user_id == user_id)
    )
    return None if value is None else rules.SeatStatus(value)


async def access_status(
    conn: AsyncConnection, course_id: str, user_id: str
) -> rules.AccessStatus | None:
    value = await conn.scalar(
        select(access_grants.c.status).where(
            access_grants.c.course_id == course_id, access_grants.c.user_id == user_id
        )
    )
    return None if value is None else rules.AccessStatus(value)


async def check_course_capacity(
    conn: AsyncConnection, envelope: Envelope[CheckCourseCapacity]
) -> ReplyEvent:
    command = envelope.payload
    # A plain read, no lock: the answer is advisory (see rules.check_capacity).
    course = await load_course(conn, command.course_id)
    check = rules.check_capacity(
        course, await seat_status(conn, command.course_id, command.user_id)
    )
    return CourseCapacityChecked(
        course_id=command.course_id,
        user_id=command.user_id,
        has_capacity=check.has_capacity,
        seats_left=check.seats_left,
        course_title=None if course is None else course.title,
        reason=check.reason,
    )


async def confirm_enrollment(
    conn: AsyncConnection, envelope: Envelope[ConfirmEnrollment]
) -> ReplyEvent:
    command = envelope.payload
    course_id, user_id = command.course_id, command.user_id
    await lock_enrollment(conn, course_id, user_id)
    # The course row lock makes check-and-take atomic: two sagas that both passed the capacity
    # check queue here, and the later one sees the seat count the earlier one committed.
    course = await load_course(conn, course_id, for_update=True)
    decision = rules.decide_confirm(course, await seat_status(conn, course_id, user_id))
    if isinstance(decision, rules.Refuse):
        return EnrollmentConfirmationFailed(
            course_id=course_id, user_id=user_id, reason=decision.reason
        )
    if decision.new:
        await conn.execute(
            insert(seats).values(
                course_id=course_id,
                user_id=user_id,
                saga_id=envelope.correlation_id,
                status=rules.SeatStatus.CONFIRMED.value,
            )
        )
        await _move_seats(conn, course_id, +1)
    return EnrollmentConfirmed(course_id=course_id, user_id=user_id)


async def release_seat(conn: AsyncConnection, envelope: Envelope[ReleaseSeat]) -> ReplyEvent:
    command = envelope.payload
    course_id, user_id = command.course_id, command.user_id
    await lock_enrollment(conn, course_id, user_id)
    course = await load_course(conn, course_id, for_update=True)
    action = rules.decide_release(course is not None, await seat_status(conn, course_id, user_id))
    if action is rules.UndoAction.UNDO:
        await conn.execute(
            update(seats)
            .where(seats.c.course_id == course_id, seats.c.user_id == user_id)
            .values(status=rules.SeatStatus.RELEASED.value, updated_at=func.now())
        )
        await _move_seats(conn, course_id, -1)
    elif action is rules.UndoAction.MARK:
        await conn.execute(
            insert(seats).values(
                course_id=course_id,
                user_id=user_id,
                saga_id=envelope.correlation_id,
                status=rules.SeatStatus.RELEASED.value,
            )
        )
    return SeatReleased(course_id=course_id, user_id=user_id)


async def grant_course_access(
    conn: AsyncConnection, envelope: Envelope[GrantCourseAccess]
) -> ReplyEvent:
    command = envelope.payload
    course_id, user_id = command.course_id, command.user_id
    await lock_enrollment(conn, course_id, user_id)
    decision = rules.decide_grant(
        await load_course(conn, course_id),
        await seat_status(conn, course_id, user_id),
        await access_status(conn, course_id, user_id),
    )
    if isinstance(decision, rules.Refuse):
        return CourseAccessDenied(course_id=course_id, user_id=user_id, reason=decision.reason)
    if decision.new:
        await conn.execute(
            insert(access_grants).values(
                course_id=course_id,
                user_id=user_id,
                saga_id=envelope.correlation_id,
                status=rules.AccessStatus.GRANTED.value,
            )
        )
    return CourseAccessGranted(course_id=course_id, user_id=user_id)


async def revoke_course_access(
    conn: AsyncConnection, envelope: Envelope[RevokeCourseAccess]
) -> ReplyEvent:
    command = envelope.payload
    course_id, user_id = command.course_id, command.user_id
    await lock_enrollment(conn, course_id, user_id)
    course_known = await load_course(conn, course_id) is not None
    action = rules.decide_revoke(course_known, await access_status(conn, course_id, user_id))
    if action is rules.UndoAction.UNDO:
        await conn.execute(
            update(access_grants)
            .where(access_grants.c.course_id == course_id, access_grants.c.user_id == user_id)
            .values(status=rules.AccessStatus.REVOKED.value, updated_at=func.now())
        )
    elif action is rules.UndoAction.MARK:
        await conn.execute(
            insert(access_grants).values(
                course_id=course_id,
                user_id=user_id,
                saga_id=envelope.correlation_id,
                status=rules.AccessStatus.REVOKED.value,
            )
        )
    return CourseAccessRevoked(course_id=course_id, user_id=user_id)


async def _move_seats(conn: AsyncConnection, course_id: str, delta: int) -> None:
    # Relative update under the row lock; the CHECK on the table refuses an over-sold course.
    await conn.execute(
        update(courses)
        .where(courses.c.course_id == course_id)
        .values(seats_taken=courses.c.seats_taken + delta)
    )


def make_handlers(config: WorkerSettings) -> HandlerMap:
    handlers: dict[type[Command], Handler] = {
        CheckCourseCapacity: check_course_capacity,
        ConfirmEnrollment: confirm_enrollment,
        ReleaseSeat: release_seat,
        GrantCourseAccess: grant_course_access,
        RevokeCourseAccess: revoke_course_access,
    }
    return handlers


# --- helpers for demos and tests ----------------------------------------------------------------


async def seed_course(
    conn: AsyncConnection,
    course_id: str,
    capacity: int,
    *,
    title: str | None = None,
    access_open: bool = True,
) -> None:
    """Create the course, or set its capacity, title and access flag (seats taken are kept).

    A capacity below the seats already taken violates the table's CHECK and raises.
    """
    statement = pg_insert(courses).values(
        course_id=course_id,
        title=title or course_id,
        capacity=capacity,
        seats_taken=0,
        access_open=access_open,
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[courses.c.course_id],
            set_={
                "title": statement.excluded.title,
                "capacity": statement.excluded.capacity,
                "access_open": statement.excluded.access_open,
            },
        )
    )


@dataclass(frozen=True)
class CourseSeats:
    capacity: int
    seats_taken: int
    confirmed: int
    """Seat rows with status 'confirmed' (equals seats_taken: the table invariant)."""
    granted: int


async def course_seats(conn: AsyncConnection, course_id: str) -> CourseSeats | None:
    course = await load_course(conn, course_id)
    if course is None:
        return None
    confirmed = await conn.scalar(
        select(func.count()).where(
            seats.c.course_id == course_id, seats.c.status == rules.SeatStatus.CONFIRMED.value
        )
    )
    granted = await conn.scalar(
        select(func.count()).where(
            access_grants.c.course_id == course_id,
            access_grants.c.status == rules.AccessStatus.GRANTED.value,
        )
    )
    return CourseSeats(course.capacity, course.seats_taken, int(confirmed or 0), int(granted or 0))
