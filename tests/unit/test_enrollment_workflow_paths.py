"""Whole enrollment sagas driven through decide(): each worker reply cites the command it answers.

The single-step table (test_enrollment_workflow_table.py) proves each transition; these paths
prove the conversation: which commands go out in which order, what is published at the end,
and that late or repeated messages change nothing.
"""

from __future__ import annotations

import pytest

from contracts import enrollment as msg
from contracts.base import ReplyEvent
from orchestrator.engine import Decision, Outcome, decide
from orchestrator.workflows.enrollment import EnrollmentState as S
from tests.unit.decider_support import COMPENSATION_TIMEOUT, CONFIG, NOW, STEP_TIMEOUT
from tests.unit.test_enrollment_support import FULL, KEY, EnrollmentRun, failure_reasons

FORWARD = ["CheckCourseCapacity", "ConfirmEnrollment", "SendWelcomeEmail", "GrantCourseAccess"]
SUCCESS: list[type[ReplyEvent]] = [
    msg.CourseCapacityChecked,
    msg.EnrollmentConfirmed,
    msg.WelcomeEmailSent,
    msg.CourseAccessGranted,
]
STEPS = [S.CHECKING_CAPACITY, S.CONFIRMING_SEAT, S.SENDING_WELCOME, S.GRANTING_ACCESS]


def run_to(step: int) -> EnrollmentRun:
    """A saga waiting for the reply to FORWARD[step] (every earlier step succeeded)."""
    run = EnrollmentRun()
    run.start()
    for reply in SUCCESS[:step]:
        run.reply(reply)
    assert run.state == STEPS[step]
    return run


def undo_all(run: EnrollmentRun) -> list[Decision]:
    decisions = []
    while run.state == S.COMPENSATING:
        decisions.append(run.confirm_compensation())
    return decisions


def test_happy_path() -> None:
    run = run_to(0)
    for reply in SUCCESS:
        run.reply(reply)

    assert run.state == S.COMPLETED
    assert run.command_types() == FORWARD
    assert run.event_summaries() == ["EnrollmentCompleted"]
    assert run.events[0].message == msg.EnrollmentCompleted(user_id="user-1", course_id="course-1")
    assert run.timers == {}
    assert run.snapshot is not None and run.snapshot.business_key == KEY


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (FULL, "no capacity: course is full"),
        (
            msg.CourseCapacityChecked(
                course_id="course-1",
                user_id="user-1",
                has_capacity=False,
                seats_left=0,
                reason="unknown course",
            ),
            "no capacity: unknown course",
        ),
    ],
)
def test_no_capacity_fails_before_anything_is_held(reply: ReplyEvent, reason: str) -> None:
    run = run_to(0)
    run.reply(reply)

    assert run.state == S.FAILED
    assert run.command_types() == ["CheckCourseCapacity"]
    assert run.event_summaries() == ["EnrollmentFailed(failed)"]
    assert failure_reasons(run.decisions[-1]) == [reason]


def test_losing_the_race_for_the_last_seat_fails_without_compensation() -> None:
    run = run_to(1)
    run.reply(msg.EnrollmentConfirmationFailed)

    assert run.state == S.FAILED
    assert run.command_types() == FORWARD[:2]
    assert failure_reasons(run.decisions[-1]) == ["seat confirmation failed: no seats left"]


@pytest.mark.parametrize(
    ("step", "failure", "reason"),
    [
        (2, msg.WelcomeEmailFailed, "welcome e-mail failed: undeliverable address"),
        (3, msg.CourseAccessDenied, "access grant failed: course access is closed"),
    ],
)
def test_failure_after_the_seat_releases_it_then_tells_the_user(
    step: int, failure: type[ReplyEvent], reason: str
) -> None:
    run = run_to(step)
    run.reply(failure)
    undo_all(run)

    assert run.state == S.FAILED
    assert run.command_types() == [*FORWARD[: step + 1], "ReleaseSeat", "SendEnrollmentNotice"]
    assert run.event_summaries() == ["EnrollmentFailed(failed)"]
    assert failure_reasons(run.decisions[-1]) == [reason]
    assert run.timers == {}


@pytest.mark.parametrize(
    ("step", "undo", "reason"),
    [
        (0, [], "capacity check timed out"),
        (1, ["ReleaseSeat"], "seat confirmation timed out"),
        (2, ["ReleaseSeat", "SendEnrollmentNotice"], "welcome e-mail timed out"),
        (
            3,
            ["RevokeCourseAccess", "ReleaseSeat", "SendEnrollmentNotice"],
            "access grant timed out",
        ),
    ],
)
def test_step_timeout_undoes_what_may_have_happened(
    step: int, undo: list[str], reason: str
) -> None:
    run = run_to(step)
    timeout = run.fire(STEP_TIMEOUT)
    assert timeout.outcome == Outcome.TRANSITIONED
    undo_all(run)

    assert run.state == S.FAILED
    assert run.command_types() == [*FORWARD[: step + 1], *undo]
    assert failure_reasons(run.decisions[-1]) == [reason]


@pytest.mark.parametrize("step", [1, 2, 3])
def test_reply_after_its_step_timed_out_is_stale(step: int) -> None:
    run = run_to(step)
    run.fire(STEP_TIMEOUT)
    late = run.reply(SUCCESS[step])
    assert late.outcome == Outcome.STALE
    assert run.state == S.COMPENSATING


def test_unconfirmed_compensation_ends_in_compensation_failed() -> None:
    run = run_to(3)
    run.reply(msg.CourseAccessDenied)
    run.fire(COMPENSATION_TIMEOUT)

    assert run.state == S.COMPENSATION_FAILED
    assert run.event_summaries() == ["EnrollmentFailed(compensation_failed)"]
    assert failure_reasons(run.decisions[-1]) == [
        "compensation ReleaseSeat got no confirmation in time"
    ]


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_duplicate_request_in_a_running_saga_is_ignored(step: int) -> None:
    run = run_to(step)
    before = run.snapshot
    decision = run.start()
    assert decision.outcome == Outcome.IGNORED
    assert run.snapshot == before


def test_repeated_reply_is_stale_once_accepted() -> None:
    run = run_to(1)
    confirmed = run.reply(msg.EnrollmentConfirmed)
    assert confirmed.outcome == Outcome.TRANSITIONED
    command = run.commands[1]
    again = run.deliver(
        msg.EnrollmentConfirmed(course_id="course-1", user_id="user-1"),
        causation_id=command.message_id,
    )
    assert again.outcome == Outcome.STALE
    assert run.state == S.SENDING_WELCOME


def test_finished_saga_records_and_ignores_everything() -> None:
    run = run_to(0)
    for reply in SUCCESS:
        run.reply(reply)
    for decision in (run.start(), run.reply(msg.CourseAccessGranted)):
        assert decision.outcome == Outcome.FINISHED
    assert run.event_summaries() == ["EnrollmentCompleted"]


def test_decisions_are_deterministic() -> None:
    """The same input decides the same output: a step retried after a conflict is the same."""
    run = run_to(3)
    run.fire(STEP_TIMEOUT)
    undo_all(run)
    for (before, incoming, at), decision in zip(run.inputs, run.decisions, strict=True):
        assert decide(run.machine, before, incoming, at, CONFIG) == decision
    assert run.now == NOW


def test_longest_failure_reason_still_fits_the_published_event() -> None:
    run = run_to(1)
    run.reply(
        msg.EnrollmentConfirmationFailed(course_id="course-1", user_id="user-1", reason="x" * 200)
    )
    (reason,) = failure_reasons(run.decisions[-1])
    assert len(reason) == 200
    assert reason.startswith("seat confirmation failed: x")
