"""Course decisions, without I/O: capacity, seat confirmation and release, access grants.

Every decision takes what the handler read under its locks (see handlers.py) and says what to
write. Releases and revocations always succeed: they are compensations, and a compensation that
could be refused would leave a saga stuck.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

REASON_UNKNOWN_COURSE = "unknown course"
REASON_FULL = "course is full"
REASON_NO_SEATS = "no seats left"
"""Another enrollment took the last seat after this one's capacity check."""
REASON_RELEASED = "seat released"
"""The seat was released (compensated) first: a late confirmation must not take one."""
REASON_NO_SEAT = "no confirmed seat"
REASON_ACCESS_CLOSED = "course access is closed"
"""The documented test rule: a course seeded with access_open=False refuses every grant."""
REASON_REVOKED = "access revoked"
"""Access was revoked (compensated) first: a late grant must not give it."""


class SeatStatus(StrEnum):
    CONFIRMED = "confirmed"
    RELEASED = "released"


class AccessStatus(StrEnum):
    GRANTED = "granted"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Course:
    title: str
    capacity: int
    seats_taken: int
    access_open: bool = True

    @property
    def seats_left(self) -> int:
        return max(self.capacity - self.seats_taken, 0)


@dataclass(frozen=True)
class CapacityCheck:
    has_capacity: bool
    seats_left: int
    reason: str | None = None


def check_capacity(course: Course | None, seat: SeatStatus | None) -> CapacityCheck:
    """Advisory only: nothing is held, the confirmation re-checks under the course lock."""
    if course is None:
        return CapacityCheck(False, 0, REASON_UNKNOWN_COURSE)
    if seat is SeatStatus.CONFIRMED:  # this user already holds a seat: asking again is fine
        return CapacityCheck(True, course.seats_left)
    if seat is SeatStatus.RELEASED:
        return CapacityCheck(False, course.seats_left, REASON_RELEASED)
    if course.seats_left == 0:
        return CapacityCheck(False, 0, REASON_FULL)
    return CapacityCheck(True, course.seats_left)


@dataclass(frozen=True)
class Confirm:
    new: bool
    """False when the user already holds the seat: nothing is written, the seat is reported."""


@dataclass(frozen=True)
class Refuse:
    reason: str


ConfirmDecision = Confirm | Refuse


def decide_confirm(course: Course | None, seat: SeatStatus | None) -> ConfirmDecision:
    # An existing seat wins over capacity: a re-sent confirmation must report it, not refuse.
    if seat is SeatStatus.CONFIRMED:
        return Confirm(new=False)
    if seat is SeatStatus.RELEASED:
        return Refuse(REASON_RELEASED)
    if course is None:
        return Refuse(REASON_UNKNOWN_COURSE)
    if course.seats_left == 0:
        return Refuse(REASON_NO_SEATS)
    return Confirm(new=True)


class UndoAction(StrEnum):
    UNDO = "undo"
    """Flip the confirmed seat (or granted access) to released (revoked)."""
    MARK = "mark"
    """Nothing to undo yet: write the released (revoked) marker so a late step is refused."""
    NOTHING = "nothing"


def decide_release(course_known: bool, seat: SeatStatus | None) -> UndoAction:
    if seat is SeatStatus.CONFIRMED:
        return UndoAction.UNDO
    if seat is None and course_known:
        return UndoAction.MARK
    # Already released, or an unknown course: no seat exists and none can be confirmed later.
    return UndoAction.NOTHING


@dataclass(frozen=True)
class Grant:
    new: bool


GrantDecision = Grant | Refuse


def decide_grant(
    course: Course | None, seat: SeatStatus | None, access: AccessStatus | None
) -> GrantDecision:
    if access is AccessStatus.GRANTED:
        return Grant(new=False)
    if access is AccessStatus.REVOKED:
        return Refuse(REASON_REVOKED)
    if course is None:
        return Refuse(REASON_UNKNOWN_COURSE)
    if seat is not SeatStatus.CONFIRMED:
        return Refuse(REASON_NO_SEAT)
    if not course.access_open:
        return Refuse(REASON_ACCESS_CLOSED)
    return Grant(new=True)


def decide_revoke(course_known: bool, access: AccessStatus | None) -> UndoAction:
    if access is AccessStatus.GRANTED:
        return UndoAction.UNDO
    if access is None and course_known:
        return UndoAction.MARK
    return UndoAction.NOTHING
