"""Courses' pure decisions: advisory capacity checks, atomic seats, fenced grants."""

from __future__ import annotations

import pytest

from consumers.courses import rules
from consumers.courses.rules import (
    AccessStatus,
    CapacityCheck,
    Confirm,
    Course,
    Grant,
    Refuse,
    SeatStatus,
    UndoAction,
    check_capacity,
    decide_confirm,
    decide_grant,
    decide_release,
    decide_revoke,
)

OPEN = Course("Sagas", capacity=5, seats_taken=2)
FULL = Course("Sagas", capacity=5, seats_taken=5)
EMPTY = Course("Sagas", capacity=0, seats_taken=0)
CLOSED = Course("Sagas", capacity=5, seats_taken=2, access_open=False)
CONFIRMED, RELEASED = SeatStatus.CONFIRMED, SeatStatus.RELEASED
GRANTED, REVOKED = AccessStatus.GRANTED, AccessStatus.REVOKED


@pytest.mark.parametrize(
    ("course", "seat", "expected"),
    [
        (OPEN, None, CapacityCheck(True, 3)),
        (FULL, None, CapacityCheck(False, 0, rules.REASON_FULL)),
        (EMPTY, None, CapacityCheck(False, 0, rules.REASON_FULL)),
        (None, None, CapacityCheck(False, 0, rules.REASON_UNKNOWN_COURSE)),
        (FULL, CONFIRMED, CapacityCheck(True, 0)),  # the user's own seat counts as capacity
        (OPEN, RELEASED, CapacityCheck(False, 3, rules.REASON_RELEASED)),
        (Course("x", capacity=3, seats_taken=7), None, CapacityCheck(False, 0, rules.REASON_FULL)),
    ],
)
def test_check_capacity(
    course: Course | None, seat: SeatStatus | None, expected: CapacityCheck
) -> None:
    assert check_capacity(course, seat) == expected


@pytest.mark.parametrize(
    ("course", "seat", "expected"),
    [
        (OPEN, None, Confirm(new=True)),
        (Course("x", capacity=1, seats_taken=0), None, Confirm(new=True)),
        (FULL, None, Refuse(rules.REASON_NO_SEATS)),
        (EMPTY, None, Refuse(rules.REASON_NO_SEATS)),
        (None, None, Refuse(rules.REASON_UNKNOWN_COURSE)),
        # A re-sent confirmation reports the seat the user holds, even on a full course.
        (FULL, CONFIRMED, Confirm(new=False)),
        # The void marker: a release overtook this confirmation; it must not take a seat.
        (OPEN, RELEASED, Refuse(rules.REASON_RELEASED)),
    ],
)
def test_decide_confirm(
    course: Course | None, seat: SeatStatus | None, expected: Confirm | Refuse
) -> None:
    assert decide_confirm(course, seat) == expected


@pytest.mark.parametrize(
    ("course_known", "seat", "expected"),
    [
        (True, CONFIRMED, UndoAction.UNDO),
        (True, None, UndoAction.MARK),
        (True, RELEASED, UndoAction.NOTHING),
        (False, None, UndoAction.NOTHING),
    ],
)
def test_decide_release(course_known: bool, seat: SeatStatus | None, expected: UndoAction) -> None:
    assert decide_release(course_known, seat) == expected


@pytest.mark.parametrize(
    ("course", "seat", "access", "expected"),
    [
        (OPEN, CONFIRMED, None, Grant(new=True)),
        (OPEN, CONFIRMED, GRANTED, Grant(new=False)),
        (CLOSED, CONFIRMED, GRANTED, Grant(new=False)),  # granted before the course closed
        (CLOSED, CONFIRMED, None, Refuse(rules.REASON_ACCESS_CLOSED)),
        (OPEN, CONFIRMED, REVOKED, Refuse(rules.REASON_REVOKED)),
        (OPEN, None, None, Refuse(rules.REASON_NO_SEAT)),
        (OPEN, RELEASED, None, Refuse(rules.REASON_NO_SEAT)),
        (None, None, None, Refuse(rules.REASON_UNKNOWN_COURSE)),
    ],
)
def test_decide_grant(
    course: Course | None,
    seat: SeatStatus | None,
    access: AccessStatus | None,
    expected: Grant | Refuse,
) -> None:
    assert decide_grant(course, seat, access) == expected


@pytest.mark.parametrize(
    ("course_known", "access", "expected"),
    [
        (True, GRANTED, UndoAction.UNDO),
        (True, None, UndoAction.MARK),
        (True, REVOKED, UndoAction.NOTHING),
        (False, None, UndoAction.NOTHING),
    ],
)
def test_decide_revoke(
    course_known: bool, access: AccessStatus | None, expected: UndoAction
) -> None:
    assert decide_revoke(course_known, access) == expected


def test_reasons_fit_a_reply() -> None:
    reasons = [getattr(rules, name) for name in dir(rules) if name.startswith("REASON_")]
    assert reasons
    assert all(0 < len(reason) <= 200 for reason in reasons)
