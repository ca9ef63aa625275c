"""The enrollment contracts: bounded identifiers, the business key, and who consumes what."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import String

from contracts import enrollment as msg
from contracts.routes import WORKER_COMMANDS, worker_for
from orchestrator.store.tables import instances
from orchestrator.workflows.enrollment import business_key, machine


def request(**changes: str) -> msg.EnrollmentRequested:
    fields = {"user_id": "user-1", "course_id": "course-1", "email": "a@example.com"} | changes
    return msg.EnrollmentRequested(**fields)


@pytest.mark.parametrize(
    "user_id", ["u", "user-1", "ada.lovelace@example.com", "urn:user:42", "A+B_c", "x" * 128]
)
def test_identifiers_accept_common_id_shapes(user_id: str) -> None:
    assert request(user_id=user_id).user_id == user_id


@pytest.mark.parametrize("user_id", ["", "a/b", "has space", "-leading", "x" * 129, "ü"])
def test_identifiers_refuse_the_key_separator_and_unbounded_values(user_id: str) -> None:
    with pytest.raises(ValidationError):
        request(user_id=user_id)


@pytest.mark.parametrize("email", ["no-at-sign", "a@b", "two@@example.com", "sp ace@example.com"])
def test_email_shape_is_checked(email: str) -> None:
    with pytest.raises(ValidationError):
        request(email=email)


def test_business_key_is_unambiguous_and_fits_the_store() -> None:
    longest = business_key("u" * 128, "c" * 128)
    column = instances.c.business_key.type
    assert isinstance(column, String) and column.length is not None
    assert len(longest) <= column.length
    # No "/" inside an identifier: different pairs never share a key.
    assert business_key("a", "b.c") != business_key("a.b", "c")
    start = machine.starts["EnrollmentRequested"]
    assert start.key(request()) == "user-1/course-1"


def test_messages_are_frozen_and_strict() -> None:
    checked = msg.CourseCapacityChecked(course_id="c", user_id="u", has_capacity=True, seats_left=1)
    with pytest.raises(ValidationError):
        checked.seats_left = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        msg.CourseCapacityChecked.model_validate(
            {"course_id": "c", "user_id": "u", "has_capacity": "yes", "seats_left": 1}
        )
    with pytest.raises(ValidationError):
        msg.ReleaseSeat.model_validate({"course_id": "c", "user_id": "u", "extra": 1})


def test_each_command_has_exactly_one_worker() -> None:
    assert worker_for(msg.ConfirmEnrollment) == "courses"
    assert worker_for(msg.SendEnrollmentNotice) == "notifications"
    assert set(WORKER_COMMANDS["courses"]) == {
        msg.CheckCourseCapacity,
        msg.ConfirmEnrollment,
        msg.ReleaseSeat,
        msg.GrantCourseAccess,
        msg.RevokeCourseAccess,
    }
    assert set(WORKER_COMMANDS["notifications"]) == {msg.SendWelcomeEmail, msg.SendEnrollmentNotice}
