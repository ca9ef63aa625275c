"""The enrollment workflow: capacity -> confirm seat -> welcome e-mail -> grant access.

Users and courses are named by `Identifier`s: bounded, and without "/" so that the saga's
business key "<user_id>/<course_id>" is unambiguous and fits the store's 400-character column.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from contracts.base import Command, Event, ReplyEvent, ShortText

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]*$"),
]
"""A user or course id: letters, digits and . _ : @ + - (never "/", the business-key separator)."""

EmailAddress = Annotated[
    str, StringConstraints(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]
"""Only the shape is checked here; deliverability is the notifications worker's business."""

Seats = Annotated[int, Field(ge=0, le=1_000_000)]


# --- the event that starts an enrollment -----------------------------------------------------


class EnrollmentRequested(Event):
    user_id: Identifier
    course_id: Identifier
    email: EmailAddress


# --- events the orchestrator publishes for other services -------------------------------------


class EnrollmentCompleted(Event):
    user_id: Identifier
    course_id: Identifier


class EnrollmentFailed(Event):
    user_id: Identifier
    course_id: Identifier
    outcome: ShortText
    """The saga's final state: failed, compensation_failed or aborted."""
    reason: ShortText


# --- courses: capacity, seats and access --------------------------------------------------------


class CheckCourseCapacity(Command):
    course_id: Identifier
    user_id: Identifier


class CourseCapacityChecked(ReplyEvent):
    """A read, not a reservation: two sagas may both see the last seat (confirming decides)."""

    course_id: Identifier
    user_id: Identifier
    has_capacity: bool
    seats_left: Seats
    course_title: ShortText | None = None
    """None for an unknown course."""
    reason: ShortText | None = None
    """Why there is no capacity (None when there is)."""


class ConfirmEnrollment(Command):
    course_id: Identifier
    user_id: Identifier


class EnrollmentConfirmed(ReplyEvent):
    course_id: Identifier
    user_id: Identifier


class EnrollmentConfirmationFailed(ReplyEvent):
    course_id: Identifier
    user_id: Identifier
    reason: ShortText


class ReleaseSeat(Command):
    course_id: Identifier
    user_id: Identifier


class SeatReleased(ReplyEvent):
    course_id: Identifier
    user_id: Identifier


class GrantCourseAccess(Command):
    course_id: Identifier
    user_id: Identifier


class CourseAccessGranted(ReplyEvent):
    course_id: Identifier
    user_id: Identifier


class CourseAccessDenied(ReplyEvent):
    course_id: Identifier
    user_id: Identifier
    reason: ShortText


class RevokeCourseAccess(Command):
    course_id: Identifier
    user_id: Identifier


class CourseAccessRevoked(ReplyEvent):
    course_id: Identifier
    user_id: Identifier


# --- notifications: e-mails recorded once per saga and template ---------------------------------


class SendWelcomeEmail(Command):
    course_id: Identifier
    user_id: Identifier
    email: EmailAddress
    course_title: ShortText


class WelcomeEmailSent(ReplyEvent):
    course_id: Identifier
    user_id: Identifier
    email_id: ShortText


class WelcomeEmailFailed(ReplyEvent):
    course_id: Identifier
    user_id: Identifier
    reason: ShortText


NoticeKind = Literal["enrollment-cancelled"]


class SendEnrollmentNotice(Command):
    """Tell the user something went wrong with their enrollment (a compensation: never refused)."""

    course_id: Identifier
    user_id: Identifier
    email: EmailAddress
    course_title: ShortText
    kind: NoticeKind = "enrollment-cancelled"


class EnrollmentNoticeSent(ReplyEvent):
    course_id: Identifier
    user_id: Identifier
    email_id: ShortText
