"""The enrollment decider as a given-event / expect-commands table, one decide() call per row.

Each row: a saga in some state (compensation stack bottom-first; it waits for the command
AWAITED), one incoming message or timer, and everything the decision must contain. Replies cite
AWAITED as causation unless the row says otherwise. The table must take every edge of
`machine.edges()` (operator edges aside), so a new transition without a row fails.
Row ids start with the state: CC = checking capacity, CS = confirming seat, W = sending the
welcome e-mail, G = granting access, C = compensating.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import pytest

from contracts import enrollment as msg
from contracts.base import Message, ReplyEvent
from orchestrator.engine import Incoming, OperatorRequest, Outcome, SagaSnapshot, Timer, decide
from orchestrator.workflows.enrollment import EnrollmentState as S
from orchestrator.workflows.enrollment import machine
from tests.unit.decider_support import (
    AWAITED,
    COMPENSATION_TIMEOUT,
    CONFIG,
    NOW,
    OTHER,
    STEP_TIMEOUT,
    incoming_message,
    incoming_operator,
    incoming_timer,
    sent_commands,
    stack_of,
    timer_changes,
)
from tests.unit.test_enrollment_support import (
    EMAIL,
    FULL,
    KEY,
    TITLE,
    enrollment_message,
    enrollment_snapshot,
    failure_reasons,
    published,
)

RELEASE, REVOKE, NOTICE = "ReleaseSeat", "RevokeCourseAccess", "SendEnrollmentNotice"
SET_STEP, CANCEL_STEP = f"set {STEP_TIMEOUT}", f"cancel {STEP_TIMEOUT}"
SET_COMP, CANCEL_COMP = f"set {COMPENSATION_TIMEOUT}", f"cancel {COMPENSATION_TIMEOUT}"
STEP, COMP = Timer(STEP_TIMEOUT), Timer(COMPENSATION_TIMEOUT)

CHECKING, CONFIRMING, WELCOMING, GRANTING = (
    S.CHECKING_CAPACITY,
    S.CONFIRMING_SEAT,
    S.SENDING_WELCOME,
    S.GRANTING_ACCESS,
)
UNDOING = S.COMPENSATING
REQUEST = msg.EnrollmentRequested
CHECKED = msg.CourseCapacityChecked
CONFIRMED, CONFIRM_FAILED = msg.EnrollmentConfirmed, msg.EnrollmentConfirmationFailed
WELCOMED, WELCOME_FAILED = msg.WelcomeEmailSent, msg.WelcomeEmailFailed
GRANTED, DENIED = msg.CourseAccessGranted, msg.CourseAccessDenied
RELEASED, REVOKED, NOTICED = msg.SeatReleased, msg.CourseAccessRevoked, msg.EnrollmentNoticeSent
ABORT = OperatorRequest("abort", operator="ops@example", reason="stuck for a day")

T, IGNORED, STALE, FINISHED = (
    Outcome.TRANSITIONED,
    Outcome.IGNORED,
    Outcome.STALE,
    Outcome.FINISHED,
)
UNDO_STACK = (NOTICE, RELEASE)
"""What a saga holding a confirmed seat has to undo: release it, then tell the user."""


@dataclass(frozen=True)
class Row:
    id: str
    state: S | None
    """None: no saga exists yet."""
    on: type[Message] | Message | Timer | OperatorRequest
    outcome: Outcome
    to: S
    stack: tuple[str, ...] = ()
    sends: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    timers: Collection[str] = ()
    stack_after: tuple[str, ...] | None = None
    """None: the stack is unchanged."""
    reason: str | None = None
    """The failure reason the saga records (and publishes, when it ends)."""
    causation: Literal["awaited", "other", "none"] = "awaited"

    @property
    def trigger(self) -> str:
        if isinstance(self.on, OperatorRequest):
            return f"operator:{self.on.action}"
        if isinstance(self.on, Timer):
            return self.on.trigger
        return self.on.message_type

    @property
    def edge(self) -> tuple[str | None, str, str] | None:
        if self.outcome not in (Outcome.STARTED, Outcome.TRANSITIONED):
            return None
        return (None if self.state is None else self.state.value, self.trigger, self.to.value)


IN_FLIGHT_STACK = {CHECKING: (), CONFIRMING: (), WELCOMING: UNDO_STACK, GRANTING: UNDO_STACK}

COMP_REASON = "access grant failed: course access is closed"
"""The reason of the compensation the C rows are in the middle of."""

# fmt: off
ROWS = [
    # --- no saga yet ---------------------------------------------------------------------------
    Row("start: requested -> CheckCourseCapacity", None, REQUEST, Outcome.STARTED, CHECKING,
        sends=("CheckCourseCapacity",), timers={SET_STEP}),
    # --- checking capacity ---------------------------------------------------------------------
    Row("CC: capacity -> ConfirmEnrollment", CHECKING, CHECKED, T, CONFIRMING,
        sends=("ConfirmEnrollment",), timers={SET_STEP}),
    Row("CC: no capacity -> failed", CHECKING, FULL, T, S.FAILED,
        publishes=("EnrollmentFailed(failed)",), timers={CANCEL_STEP},
        reason="no capacity: course is full"),
    Row("CC: timeout -> failed, nothing to undo", CHECKING, STEP, T, S.FAILED,
        publishes=("EnrollmentFailed(failed)",), timers={CANCEL_STEP},
        reason="capacity check timed out"),
    Row("CC: duplicate request", CHECKING, REQUEST, IGNORED, CHECKING),
    Row("CC: capacity citing another command", CHECKING, CHECKED, STALE, CHECKING,
        causation="other"),
    Row("CC: capacity without causation", CHECKING, CHECKED, STALE, CHECKING, causation="none"),
    Row("CC: reply of another step", CHECKING, CONFIRMED, IGNORED, CHECKING),
    Row("CC: stray compensation timer", CHECKING, COMP, IGNORED, CHECKING),
    # --- confirming the seat -------------------------------------------------------------------
    Row("CS: confirmed -> SendWelcomeEmail, undo pushed", CONFIRMING, CONFIRMED, T, WELCOMING,
        sends=("SendWelcomeEmail",), timers={SET_STEP}, stack_after=UNDO_STACK),
    Row("CS: seat taken by another saga -> failed", CONFIRMING, CONFIRM_FAILED, T, S.FAILED,
        publishes=("EnrollmentFailed(failed)",), timers={CANCEL_STEP},
        reason="seat confirmation failed: no seats left"),
    Row("CS: timeout -> ReleaseSeat (it may have been taken)", CONFIRMING, STEP, T, UNDOING,
        sends=(RELEASE,), timers={CANCEL_STEP, SET_COMP}, stack_after=(RELEASE,),
        reason="seat confirmation timed out"),
    Row("CS: duplicate request", CONFIRMING, REQUEST, IGNORED, CONFIRMING),
    Row("CS: confirmed citing another command", CONFIRMING, CONFIRMED, STALE, CONFIRMING,
        causation="other"),
    Row("CS: late capacity reply", CONFIRMING, CHECKED, STALE, CONFIRMING, causation="other"),
    # --- sending the welcome e-mail ------------------------------------------------------------
    Row("W: welcomed -> GrantCourseAccess", WELCOMING, WELCOMED, T, GRANTING, stack=UNDO_STACK,
        sends=("GrantCourseAccess",), timers={SET_STEP}),
    Row("W: welcome failed -> ReleaseSeat first", WELCOMING, WELCOME_FAILED, T, UNDOING,
        stack=UNDO_STACK, sends=(RELEASE,), timers={CANCEL_STEP, SET_COMP},
        reason="welcome e-mail failed: undeliverable address"),
    Row("W: timeout -> ReleaseSeat first", WELCOMING, STEP, T, UNDOING, stack=UNDO_STACK,
        sends=(RELEASE,), timers={CANCEL_STEP, SET_COMP}, reason="welcome e-mail timed out"),
    Row("W: duplicate request", WELCOMING, REQUEST, IGNORED, WELCOMING, stack=UNDO_STACK),
    Row("W: welcomed citing another command", WELCOMING, WELCOMED, STALE, WELCOMING,
        stack=UNDO_STACK, causation="other"),
    Row("W: reply of another step", WELCOMING, GRANTED, IGNORED, WELCOMING, stack=UNDO_STACK),
    # --- granting access -----------------------------------------------------------------------
    Row("G: granted -> completed", GRANTING, GRANTED, T, S.COMPLETED, stack=UNDO_STACK,
        publishes=("EnrollmentCompleted",), timers={CANCEL_STEP}),
    Row("G: denied -> ReleaseSeat first", GRANTING, DENIED, T, UNDOING, stack=UNDO_STACK,
        sends=(RELEASE,), timers={CANCEL_STEP, SET_COMP}, reason=COMP_REASON),
    Row("G: timeout -> RevokeCourseAccess first", GRANTING, STEP, T, UNDOING, stack=UNDO_STACK,
        sends=(REVOKE,), timers={CANCEL_STEP, SET_COMP}, stack_after=(*UNDO_STACK, REVOKE),
        reason="access grant timed out"),
    Row("G: duplicate request", GRANTING, REQUEST, IGNORED, GRANTING, stack=UNDO_STACK),
    Row("G: granted citing another command", GRANTING, GRANTED, STALE, GRANTING,
        stack=UNDO_STACK, causation="other"),
    Row("G: reply of another step", GRANTING, WELCOME_FAILED, IGNORED, GRANTING,
        stack=UNDO_STACK),
    # --- compensating (the saga waits for the top compensation's confirmation) -----------------
    Row("C: access revoked -> ReleaseSeat", UNDOING, REVOKED, T, UNDOING,
        stack=(*UNDO_STACK, REVOKE), sends=(RELEASE,), timers={SET_COMP}, stack_after=UNDO_STACK),
    Row("C: seat released -> SendEnrollmentNotice", UNDOING, RELEASED, T, UNDOING,
        stack=UNDO_STACK, sends=(NOTICE,), timers={SET_COMP}, stack_after=(NOTICE,)),
    Row("C: notice sent, last one -> failed", UNDOING, NOTICED, T, S.FAILED, stack=(NOTICE,),
        publishes=("EnrollmentFailed(failed)",), timers={CANCEL_COMP}, stack_after=(),
        reason=COMP_REASON),
    Row("C: seat released, last one -> failed", UNDOING, RELEASED, T, S.FAILED, stack=(RELEASE,),
        publishes=("EnrollmentFailed(failed)",), timers={CANCEL_COMP}, stack_after=(),
        reason=COMP_REASON),
    # Stacks the workflow never builds; the engine pops any stack the same way.
    Row("C: access revoked, last one -> failed", UNDOING, REVOKED, T, S.FAILED, stack=(REVOKE,),
        publishes=("EnrollmentFailed(failed)",), timers={CANCEL_COMP}, stack_after=(),
        reason=COMP_REASON),
    Row("C: notice sent, more below -> ReleaseSeat", UNDOING, NOTICED, T, UNDOING,
        stack=(RELEASE, NOTICE), sends=(RELEASE,), timers={SET_COMP}, stack_after=(RELEASE,)),
    Row("C: compensation timeout -> compensation_failed", UNDOING, COMP, T,
        S.COMPENSATION_FAILED, stack=UNDO_STACK,
        publishes=("EnrollmentFailed(compensation_failed)",),
        reason="compensation ReleaseSeat got no confirmation in time"),
    Row("C: confirmation of another compensation", UNDOING, NOTICED, IGNORED, UNDOING,
        stack=UNDO_STACK),
    Row("C: confirmation citing another command", UNDOING, RELEASED, STALE, UNDOING,
        stack=UNDO_STACK, causation="other"),
    Row("C: late forward reply", UNDOING, GRANTED, STALE, UNDOING, stack=UNDO_STACK,
        causation="other"),
    Row("C: forward reply citing the compensation", UNDOING, DENIED, IGNORED, UNDOING,
        stack=UNDO_STACK),
    Row("C: stray step timeout", UNDOING, STEP, IGNORED, UNDOING, stack=UNDO_STACK),
    Row("C: duplicate request", UNDOING, REQUEST, IGNORED, UNDOING, stack=UNDO_STACK),
    # --- an operator aborts an unfinished saga: nothing more is sent or undone -----------------
    Row("CC: operator aborts", CHECKING, ABORT, T, S.ABORTED,
        publishes=("EnrollmentFailed(aborted)",)),
    Row("CS: operator aborts", CONFIRMING, ABORT, T, S.ABORTED,
        publishes=("EnrollmentFailed(aborted)",)),
    Row("W: operator aborts", WELCOMING, ABORT, T, S.ABORTED, stack=UNDO_STACK,
        publishes=("EnrollmentFailed(aborted)",)),
    Row("G: operator aborts", GRANTING, ABORT, T, S.ABORTED, stack=UNDO_STACK,
        publishes=("EnrollmentFailed(aborted)",)),
    Row("C: operator aborts", UNDOING, ABORT, T, S.ABORTED, stack=UNDO_STACK,
        publishes=("EnrollmentFailed(aborted)",)),
    # --- finished sagas record and ignore everything -------------------------------------------
    Row("completed: duplicate request", S.COMPLETED, REQUEST, FINISHED, S.COMPLETED),
    Row("completed: late grant reply", S.COMPLETED, GRANTED, FINISHED, S.COMPLETED),
    Row("failed: late confirmation", S.FAILED, CONFIRMED, FINISHED, S.FAILED),
    Row("failed: step timeout", S.FAILED, STEP, FINISHED, S.FAILED),
    Row("compensation_failed: late confirmation", S.COMPENSATION_FAILED, RELEASED, FINISHED,
        S.COMPENSATION_FAILED, stack=UNDO_STACK),
    Row("aborted: duplicate request", S.ABORTED, REQUEST, FINISHED, S.ABORTED),
]
# fmt: on


def given(r: Row) -> SagaSnapshot | None:
    if r.state is None:
        return None
    if r.state is not UNDOING:
        return enrollment_snapshot(r.state, stack=r.stack)
    return enrollment_snapshot(
        UNDOING, stack=r.stack, compensation_target=S.FAILED, reason=COMP_REASON
    )


def incoming_for(r: Row) -> Incoming:
    if isinstance(r.on, OperatorRequest):
        return incoming_operator(r.on)
    if isinstance(r.on, Timer):
        return incoming_timer(r.on.name)
    message = r.on if isinstance(r.on, Message) else enrollment_message(r.on)
    causation: uuid.UUID | None = None
    if isinstance(message, ReplyEvent):
        causation = {"awaited": AWAITED, "other": OTHER, "none": None}[r.causation]
    return incoming_message(message, causation_id=causation)


@pytest.mark.parametrize("r", ROWS, ids=lambda r: r.id)
def test_enrollment_decider(r: Row) -> None:
    before = given(r)
    incoming = incoming_for(r)

    decision = decide(machine, before, incoming, NOW, CONFIG)

    assert decision.outcome == r.outcome, decision.note
    assert decision.from_state == (None if r.state is None else r.state.value)
    assert decision.to_state == r.to
    assert sent_commands(decision) == list(r.sends)
    assert published(decision) == list(r.publishes)
    assert timer_changes(decision) == set(r.timers)
    assert stack_of(decision.runtime) == list(r.stack if r.stack_after is None else r.stack_after)
    assert decision.finished == (r.to in machine.final)
    for change in decision.timers:
        if change.due_at is not None:
            assert change.due_at == NOW + CONFIG.step_timeout
            assert change.message_id is not None
    if r.reason is not None:
        assert decision.runtime.reason == r.reason
    if r.publishes and r.publishes[0].startswith("EnrollmentFailed") and r.on is not ABORT:
        assert failure_reasons(decision) == [r.reason]

    if before is None:
        assert decision.version == 1
        assert decision.business_key == KEY
    elif not decision.changes_saga:
        assert (decision.version, decision.data, decision.runtime, decision.outgoing) == (
            before.version,
            before.data,
            before.runtime,
            (),
        )
        assert decision.timers == ()
        return
    else:
        assert decision.version == before.version + 1

    sent = {o.message_id for o in decision.outgoing if o.kind == "command"}
    if decision.finished:
        expected = set()
    elif r.to is UNDOING:
        expected = sent  # forward commands in flight are no longer awaited
        assert len(sent) == 1
        assert decision.runtime.compensation_target == S.FAILED
    else:
        earlier = set() if before is None else set(before.runtime.outstanding)
        expected = (earlier - {incoming.causation_id}) | sent
    assert decision.runtime.outstanding == expected


@pytest.mark.parametrize(
    "pair", sorted(machine.ignores), ids=[f"{s}: {t}" for s, t in sorted(machine.ignores)]
)
def test_explicitly_ignored_pair_changes_nothing(pair: tuple[str, str]) -> None:
    state, trigger = S(pair[0]), pair[1]
    before = enrollment_snapshot(state, stack=IN_FLIGHT_STACK[state])
    message = enrollment_message(machine.event_classes[trigger])
    # Cite the awaited command: a stale reply would be fenced before the ignore is consulted.
    causation = AWAITED if isinstance(message, ReplyEvent) else None

    decision = decide(
        machine, before, incoming_message(message, causation_id=causation), NOW, CONFIG
    )

    assert decision.outcome == Outcome.IGNORED
    assert decision.note == machine.ignores[pair].why
    assert (decision.to_state, decision.data, decision.runtime, decision.version) == (
        before.state,
        before.data,
        before.runtime,
        before.version,
    )
    assert (decision.outgoing, decision.timers) == ((), ())


def test_machine_validates_and_every_active_pair_is_decided() -> None:
    machine.validate()
    assert machine.name == "enrollment"
    assert machine.final == {"completed", "failed", "compensation_failed", "aborted"}
    assert machine.consumed_events == sorted(
        {
            "EnrollmentRequested",
            "CourseCapacityChecked",
            "EnrollmentConfirmed",
            "EnrollmentConfirmationFailed",
            "WelcomeEmailSent",
            "WelcomeEmailFailed",
            "CourseAccessGranted",
            "CourseAccessDenied",
            "SeatReleased",
            "CourseAccessRevoked",
            "EnrollmentNoticeSent",
        }
    )


def test_commands_carry_the_enrollment() -> None:
    before = enrollment_snapshot(CONFIRMING)
    decision = decide(
        machine,
        before,
        incoming_message(CONFIRMED(course_id="course-1", user_id="user-1"), causation_id=AWAITED),
        NOW,
        CONFIG,
    )
    (welcome,) = [o.message for o in decision.outgoing]
    assert welcome == msg.SendWelcomeEmail(
        course_id="course-1", user_id="user-1", email=EMAIL, course_title=TITLE
    )
    notice, release = (c.payload for c in decision.runtime.compensations)
    assert notice == {
        "course_id": "course-1",
        "user_id": "user-1",
        "email": EMAIL,
        "course_title": TITLE,
        "kind": "enrollment-cancelled",
    }
    assert release == {"course_id": "course-1", "user_id": "user-1"}


# --- every edge has a row ------------------------------------------------------------------------


def _row_edges() -> set[tuple[str | None, str, str]]:
    return {e for r in ROWS if (e := r.edge) is not None}


def test_every_edge_is_exercised_by_a_row() -> None:
    # Operator actions are the engine's own edges, tested in test_engine_operator.py.
    workflow_edges = {e for e in machine.edges() if not e[1].startswith("operator:")}
    missing = workflow_edges - _row_edges()
    assert not missing, f"transitions without a table row: {sorted(missing, key=str)}"


def test_rows_only_take_declared_edges() -> None:
    assert _row_edges() <= set(machine.edges())
