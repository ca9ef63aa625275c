"""Canonical enrollment messages and snapshots for the enrollment decider tests (and their checks).

The generic pieces (incoming messages, timers, SagaRun) come from decider_support; this module
adds what is specific to the enrollment workflow: one valid instance of each of its messages,
which command each reply answers, hand-built snapshots, and a SagaRun driven by those.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import pytest

from contracts import enrollment as msg
from contracts.base import Command, Message, ReplyEvent
from contracts.registry import MESSAGE_TYPES
from orchestrator.engine import (
    CompensationEntry,
    Decision,
    Outgoing,
    RuntimeState,
    SagaSnapshot,
)
from orchestrator.workflows.enrollment import EnrollmentData, EnrollmentState, machine
from tests.unit.decider_support import AWAITED, SAGA_ID, SagaRun

USER = "user-1"
COURSE = "course-1"
EMAIL = "user-1@example.com"
TITLE = "Sagas in Practice"
KEY = f"{USER}/{COURSE}"

S = EnrollmentState
IDS = {"course_id": COURSE, "user_id": USER}

_FACTORIES: dict[type[Message], Callable[[], Message]] = {
    msg.EnrollmentRequested: lambda: msg.EnrollmentRequested(
        user_id=USER, course_id=COURSE, email=EMAIL
    ),
    msg.EnrollmentCompleted: lambda: msg.EnrollmentCompleted(**IDS),
    msg.EnrollmentFailed: lambda: msg.EnrollmentFailed(**IDS, outcome="failed", reason="why"),
    msg.CheckCourseCapacity: lambda: msg.CheckCourseCapacity(**IDS),
    msg.CourseCapacityChecked: lambda: msg.CourseCapacityChecked(
        **IDS, has_capacity=True, seats_left=3, course_title=TITLE
    ),
    msg.ConfirmEnrollment: lambda: msg.ConfirmEnrollment(**IDS),
    msg.EnrollmentConfirmed: lambda: msg.EnrollmentConfirmed(**IDS),
    msg.EnrollmentConfirmationFailed: lambda: msg.EnrollmentConfirmationFailed(
        **IDS, reason="no seats left"
    ),
    msg.ReleaseSeat: lambda: msg.ReleaseSeat(**IDS),
    msg.SeatReleased: lambda: msg.SeatReleased(**IDS),
    msg.GrantCourseAccess: lambda: msg.GrantCourseAccess(**IDS),
    msg.CourseAccessGranted: lambda: msg.CourseAccessGranted(**IDS),
    msg.CourseAccessDenied: lambda: msg.CourseAccessDenied(**IDS, reason="course access is closed"),
    msg.RevokeCourseAccess: lambda: msg.RevokeCourseAccess(**IDS),
    msg.CourseAccessRevoked: lambda: msg.CourseAccessRevoked(**IDS),
    msg.SendWelcomeEmail: lambda: msg.SendWelcomeEmail(**IDS, email=EMAIL, course_title=TITLE),
    msg.WelcomeEmailSent: lambda: msg.WelcomeEmailSent(**IDS, email_id="em-1"),
    msg.WelcomeEmailFailed: lambda: msg.WelcomeEmailFailed(**IDS, reason="undeliverable address"),
    msg.SendEnrollmentNotice: lambda: msg.SendEnrollmentNotice(
        course_id=COURSE, user_id=USER, email=EMAIL, course_title=TITLE
    ),
    msg.EnrollmentNoticeSent: lambda: msg.EnrollmentNoticeSent(**IDS, email_id="em-2"),
}

FULL = msg.CourseCapacityChecked(**IDS, has_capacity=False, seats_left=0, reason="course is full")
"""The capacity check's 'no' (the canonical instance says yes)."""


def enrollment_message(kind: type[Message]) -> Message:
    """A valid instance of an enrollment message with canonical field values."""
    return _FACTORIES[kind]()


REPLY_TO: dict[type[ReplyEvent], type[Command]] = {
    msg.CourseCapacityChecked: msg.CheckCourseCapacity,
    msg.EnrollmentConfirmed: msg.ConfirmEnrollment,
    msg.EnrollmentConfirmationFailed: msg.ConfirmEnrollment,
    msg.WelcomeEmailSent: msg.SendWelcomeEmail,
    msg.WelcomeEmailFailed: msg.SendWelcomeEmail,
    msg.CourseAccessGranted: msg.GrantCourseAccess,
    msg.CourseAccessDenied: msg.GrantCourseAccess,
    msg.SeatReleased: msg.ReleaseSeat,
    msg.CourseAccessRevoked: msg.RevokeCourseAccess,
    msg.EnrollmentNoticeSent: msg.SendEnrollmentNotice,
}
"""Which command each reply answers."""

# --- hand-built snapshots ------------------------------------------------------------------------


def compensation_entry(command_type: str) -> CompensationEntry:
    command = enrollment_message(MESSAGE_TYPES[command_type])
    return CompensationEntry(
        command_type, command.model_dump(mode="json"), machine.compensations[command_type]
    )


FINISHED_STATES = {S.COMPLETED, S.FAILED, S.COMPENSATION_FAILED, S.ABORTED}


def enrollment_snapshot(
    state: EnrollmentState,
    *,
    stack: Iterable[str] = (),
    outstanding: Iterable[uuid.UUID] = (AWAITED,),
    compensation_target: EnrollmentState | None = None,
    reason: str | None = None,
    version: int = 5,
) -> SagaSnapshot:
    """An enrollment saga in `state`, with its data filled in as far as that state implies."""
    finished = state in FINISHED_STATES
    data = EnrollmentData(
        user_id=USER,
        course_id=COURSE,
        email=EMAIL,
        course_title=None if state is S.CHECKING_CAPACITY else TITLE,
    )
    return SagaSnapshot(
        saga_id=SAGA_ID,
        workflow=machine.name,
        business_key=KEY,
        state=state.value,
        data=data.model_dump(mode="json"),
        runtime=RuntimeState(
            outstanding=frozenset() if finished else frozenset(outstanding),
            compensations=tuple(compensation_entry(c) for c in stack),
            compensation_target=None if compensation_target is None else compensation_target.value,
            reason=reason,
        ),
        version=version,
        finished=finished,
    )


# --- reading decisions ---------------------------------------------------------------------------


def describe_event(out: Outgoing) -> str:
    """`EnrollmentCompleted`, or `EnrollmentFailed(<outcome>)`."""
    if isinstance(out.message, msg.EnrollmentFailed):
        return f"EnrollmentFailed({out.message.outcome})"
    return out.message.message_type


def published(decision: Decision) -> list[str]:
    return [describe_event(o) for o in decision.outgoing if o.kind == "event"]


def failure_reasons(decision: Decision) -> list[str]:
    return [
        o.message.reason for o in decision.outgoing if isinstance(o.message, msg.EnrollmentFailed)
    ]


# --- a saga driver speaking enrollment -----------------------------------------------------------


class EnrollmentRun(SagaRun):
    """SagaRun with the enrollment machine and its messages."""

    def __init__(self) -> None:
        super().__init__(machine=machine)

    def start(self, message: Message | None = None) -> Decision:
        return self.deliver(message or enrollment_message(msg.EnrollmentRequested))

    def reply(self, message: ReplyEvent | type[ReplyEvent]) -> Decision:
        """A worker's answer to the latest command of the type it answers."""
        reply = enrollment_message(message) if isinstance(message, type) else message
        assert isinstance(reply, ReplyEvent)
        answered = REPLY_TO[type(reply)]
        command = self.last_command(answered)
        assert command is not None, f"no {answered.message_type} was sent"
        return self.deliver(reply, causation_id=command.message_id)

    def confirm_compensation(self) -> Decision:
        assert self.snapshot is not None and self.snapshot.runtime.compensations
        top = self.snapshot.runtime.compensations[-1]
        reply = next(r for r in REPLY_TO if r.message_type == top.confirmed_by)
        return self.reply(reply)

    def event_summaries(self) -> list[str]:
        return [describe_event(o) for o in self.events]


# --- the helpers' own checks ---------------------------------------------------------------------

ENROLLMENT_TYPES = [m for m in MESSAGE_TYPES.values() if m.__module__ == msg.__name__]


@pytest.mark.parametrize("kind", ENROLLMENT_TYPES, ids=lambda k: k.message_type)
def test_every_enrollment_message_has_a_canonical_instance(kind: type[Message]) -> None:
    instance = enrollment_message(kind)
    assert type(instance) is kind
    assert kind.model_validate_json(instance.model_dump_json()) == instance


def test_every_reply_the_workflow_awaits_names_its_command() -> None:
    replies = {m for m in ENROLLMENT_TYPES if issubclass(m, ReplyEvent)}
    assert set(REPLY_TO) == replies
    assert {c.message_type for c in REPLY_TO.values()} <= set(MESSAGE_TYPES)


def test_every_compensation_confirmation_is_a_reply_to_its_command() -> None:
    for command_type, reply_type in machine.compensations.items():
        assert REPLY_TO[MESSAGE_TYPES[reply_type]].message_type == command_type  # type: ignore[index]
