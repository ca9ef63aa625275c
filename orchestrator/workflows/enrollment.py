"""The enrollment saga: capacity -> confirm seat -> welcome e-mail -> grant access.

  checking_capacity --CourseCapacityChecked(has_capacity)--> confirming_seat
  --EnrollmentConfirmed--> sending_welcome --WelcomeEmailSent--> granting_access
  --CourseAccessGranted--> completed

One saga per (user, course), ever: the business key is "<user_id>/<course_id>", so a second
EnrollmentRequested for the pair (any correlation id) is a recorded no-op, not a second seat.

Failures before a seat is held end in `failed` directly: no capacity, or a confirmation the
courses worker refused because another saga took the last seat (the capacity check is only a
read; the confirmation re-checks under the course row's lock). A capacity check that times out
also fails directly: it changed nothing.

Once the seat is confirmed, the undo of the enrollment is two compensations, pushed together:
ReleaseSeat, and below it SendEnrollmentNotice (the user may already hold a welcome e-mail, so
they are told the enrollment was cancelled - after the seat is released, because compensations
run last-in first-out). A refused or timed-out welcome e-mail, or access denied, runs them and
ends in `failed`. A step that times out may still have taken effect, so its own undo is pushed
first (ReleaseSeat for the confirmation, RevokeCourseAccess for the grant); workers keep void
markers, so the undo also fences a late execution of the step (and the notifications worker
refuses a welcome e-mail once the saga's cancellation notice is recorded). Step timeouts are
`ctx.config.step_timeout`, as in the order workflow. EnrollmentCompleted / EnrollmentFailed are
published on entering the final states.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel

from contracts import enrollment as msg
from contracts.base import Command, Event
from orchestrator.engine import Machine, StepContext, Timer


class EnrollmentState(StrEnum):
    CHECKING_CAPACITY = "checking_capacity"
    CONFIRMING_SEAT = "confirming_seat"
    SENDING_WELCOME = "sending_welcome"
    GRANTING_ACCESS = "granting_access"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATION_FAILED = "compensation_failed"
    ABORTED = "aborted"


class EnrollmentData(BaseModel):
    user_id: str
    course_id: str
    email: str
    course_title: str | None = None


Ctx = StepContext[EnrollmentState, EnrollmentData]
STEP_TIMEOUT = Timer("step-timeout")
S = EnrollmentState


def business_key(user_id: str, course_id: str) -> str:
    # Identifiers never contain "/" (contracts.enrollment.Identifier): the key is unambiguous.
    return f"{user_id}/{course_id}"


machine: Machine[EnrollmentState, EnrollmentData] = Machine(
    "enrollment",
    states=EnrollmentState,
    data=EnrollmentData,
    final=[S.COMPLETED, S.FAILED],
    compensating=S.COMPENSATING,
    compensation_failed=S.COMPENSATION_FAILED,
    aborted=S.ABORTED,
    # Raise with every change of states, edges, timers or compensations (README: Changing a
    # workflow); the snapshot in versions/ fails its test until then.
    version=1,
)
machine.compensation(msg.ReleaseSeat, confirmed_by=msg.SeatReleased)
machine.compensation(msg.RevokeCourseAccess, confirmed_by=msg.CourseAccessRevoked)
machine.compensation(msg.SendEnrollmentNotice, confirmed_by=msg.EnrollmentNoticeSent)
machine.compensates_to(S.FAILED)


def _next_step(ctx: Ctx, command: Command) -> None:
    """Send the next step's command; its reply is awaited for at most the step timeout."""
    ctx.send(command)
    ctx.schedule(STEP_TIMEOUT.name, ctx.config.step_timeout)


def _fail(ctx: Ctx, reason: str) -> None:
    """End without undoing anything: nothing was held yet."""
    ctx.cancel_timer(STEP_TIMEOUT.name)
    ctx.goto(S.FAILED, reason=reason)


def _undo(ctx: Ctx, reason: str) -> None:
    ctx.cancel_timer(STEP_TIMEOUT.name)
    ctx.compensate(then=S.FAILED, reason=reason)


# --- start ---------------------------------------------------------------------------------------


def _requested(ctx: Ctx, event: msg.EnrollmentRequested) -> None:
    _next_step(ctx, msg.CheckCourseCapacity(course_id=ctx.data.course_id, user_id=ctx.data.user_id))


machine.start(
    msg.EnrollmentRequested,
    key=lambda e: business_key(e.user_id, e.course_id),
    init=lambda e: EnrollmentData(user_id=e.user_id, course_id=e.course_id, email=e.email),
    to=S.CHECKING_CAPACITY,
    do=_requested,
)

# --- forward steps -------------------------------------------------------------------------------


def _capacity_checked(ctx: Ctx, event: msg.CourseCapacityChecked) -> None:
    if not event.has_capacity:
        _fail(ctx, f"no capacity: {event.reason or 'course is full'}")
        return
    ctx.data.course_title = event.course_title
    _next_step(ctx, msg.ConfirmEnrollment(course_id=ctx.data.course_id, user_id=ctx.data.user_id))
    ctx.goto(S.CONFIRMING_SEAT)


def _confirmed(ctx: Ctx, event: msg.EnrollmentConfirmed) -> None:
    # Pushed bottom-first: on undo the seat is released first, then the user is told.
    ctx.push_compensation(
        msg.SendEnrollmentNotice(
            course_id=ctx.data.course_id,
            user_id=ctx.data.user_id,
            email=ctx.data.email,
            course_title=_title(ctx),
        )
    )
    ctx.push_compensation(msg.ReleaseSeat(course_id=ctx.data.course_id, user_id=ctx.data.user_id))
    _next_step(
        ctx,
        msg.SendWelcomeEmail(
            course_id=ctx.data.course_id,
            user_id=ctx.data.user_id,
            email=ctx.data.email,
            course_title=_title(ctx),
        ),
    )


def _confirmation_failed(ctx: Ctx, event: msg.EnrollmentConfirmationFailed) -> None:
    _fail(ctx, f"seat confirmation failed: {event.reason}")


def _welcomed(ctx: Ctx, event: msg.WelcomeEmailSent) -> None:
    _next_step(ctx, msg.GrantCourseAccess(course_id=ctx.data.course_id, user_id=ctx.data.user_id))


def _welcome_failed(ctx: Ctx, event: msg.WelcomeEmailFailed) -> None:
    _undo(ctx, f"welcome e-mail failed: {event.reason}")


def _granted(ctx: Ctx, event: msg.CourseAccessGranted) -> None:
    ctx.cancel_timer(STEP_TIMEOUT.name)


def _denied(ctx: Ctx, event: msg.CourseAccessDenied) -> None:
    _undo(ctx, f"access grant failed: {event.reason}")


def _capacity_timed_out(ctx: Ctx, _: None) -> None:
    _fail(ctx, "capacity check timed out")


UndoCommand = type[msg.ReleaseSeat] | type[msg.RevokeCourseAccess]


def _timed_out(step: str, undo_step: UndoCommand | None) -> Callable[[Ctx, None], None]:
    def action(ctx: Ctx, _: None) -> None:
        # The step may have taken effect without its reply arriving: undo it too. The courses
        # worker records a void marker, so the undo also fences a late execution of the step.
        if undo_step is not None:
            ctx.push_compensation(undo_step(course_id=ctx.data.course_id, user_id=ctx.data.user_id))
        _undo(ctx, f"{step} timed out")

    return action


def _title(ctx: Ctx) -> str:
    return ctx.data.course_title or ctx.data.course_id


def _completed(ctx: Ctx, _: object) -> None:
    ctx.publish(msg.EnrollmentCompleted(course_id=ctx.data.course_id, user_id=ctx.data.user_id))


def _ended_without_completing(outcome: EnrollmentState) -> Callable[[Ctx, object], None]:
    def action(ctx: Ctx, _: object) -> None:
        reason = ctx.reason or outcome.value
        ctx.publish(
            msg.EnrollmentFailed(
                course_id=ctx.data.course_id,
                user_id=ctx.data.user_id,
                outcome=outcome.value,
                reason=reason[:200],
            )
        )

    return action


undo = S.COMPENSATING
machine.on(
    S.CHECKING_CAPACITY,
    msg.CourseCapacityChecked,
    to=(S.CONFIRMING_SEAT, S.FAILED),
    do=_capacity_checked,
)
machine.on(S.CHECKING_CAPACITY, STEP_TIMEOUT, to=S.FAILED, do=_capacity_timed_out)
machine.on(S.CONFIRMING_SEAT, msg.EnrollmentConfirmed, to=S.SENDING_WELCOME, do=_confirmed)
machine.on(
    S.CONFIRMING_SEAT, msg.EnrollmentConfirmationFailed, to=S.FAILED, do=_confirmation_failed
)
machine.on(
    S.CONFIRMING_SEAT, STEP_TIMEOUT, to=undo, do=_timed_out("seat confirmation", msg.ReleaseSeat)
)
machine.on(S.SENDING_WELCOME, msg.WelcomeEmailSent, to=S.GRANTING_ACCESS, do=_welcomed)
machine.on(S.SENDING_WELCOME, msg.WelcomeEmailFailed, to=undo, do=_welcome_failed)
# Nothing of its own to undo: the cancellation notice already pushed covers a sent welcome.
machine.on(S.SENDING_WELCOME, STEP_TIMEOUT, to=undo, do=_timed_out("welcome e-mail", None))
machine.on(S.GRANTING_ACCESS, msg.CourseAccessGranted, to=S.COMPLETED, do=_granted)
machine.on(S.GRANTING_ACCESS, msg.CourseAccessDenied, to=undo, do=_denied)
machine.on(
    S.GRANTING_ACCESS,
    STEP_TIMEOUT,
    to=undo,
    do=_timed_out("access grant", msg.RevokeCourseAccess),
)

IN_FLIGHT = [S.CHECKING_CAPACITY, S.CONFIRMING_SEAT, S.SENDING_WELCOME, S.GRANTING_ACCESS]
machine.ignore(IN_FLIGHT, msg.EnrollmentRequested, why="duplicate request of a running enrollment")

# Replies that belong to another step. The engine already fences replies to commands it does
# not await, so these can only be operator re-sends; they are recorded and change nothing.
_replies_of: dict[EnrollmentState, tuple[type[Event], ...]] = {
    S.CHECKING_CAPACITY: (msg.CourseCapacityChecked,),
    S.CONFIRMING_SEAT: (msg.EnrollmentConfirmed, msg.EnrollmentConfirmationFailed),
    S.SENDING_WELCOME: (msg.WelcomeEmailSent, msg.WelcomeEmailFailed),
    S.GRANTING_ACCESS: (msg.CourseAccessGranted, msg.CourseAccessDenied),
}
for _state in IN_FLIGHT:
    _others = [r for s, rs in _replies_of.items() if s != _state for r in rs]
    machine.ignore(_state, *_others, why="reply of another step")

machine.on_enter(S.COMPLETED, _completed)
machine.on_enter(S.FAILED, _ended_without_completing(S.FAILED))
machine.on_enter(S.COMPENSATION_FAILED, _ended_without_completing(S.COMPENSATION_FAILED))
machine.on_enter(S.ABORTED, _ended_without_completing(S.ABORTED))
machine.validate()
