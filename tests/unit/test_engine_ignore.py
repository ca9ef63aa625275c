"""`ctx.ignore(why)`: an action that finds, from the saga's data, that its message changes nothing.

The step is recorded like a declared ignore (outcome IGNORED, `why` as the note, no new version,
no effects); data changes the action made first are dropped; other effects are a definition bug.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from contracts import order as msg
from orchestrator.engine import Machine, Outcome, RuntimeState, SagaSnapshot, decide
from orchestrator.engine.context import ActionError, StepContext
from tests.unit.decider_support import (
    AWAITED,
    CONFIG,
    NOW,
    SAGA_ID,
    Toy,
    ToyData,
    ToyDone,
    ToyPoked,
    ToyStarted,
    ToyWork,
    incoming_message,
)

Ctx = StepContext[Toy, ToyData]
Action = Callable[[Ctx, Any], None]


def _machine(
    on_poke: Action, on_done: Action | None = None, on_start: Action | None = None
) -> Machine[Toy, ToyData]:
    machine: Machine[Toy, ToyData] = Machine(
        "toy-ignore",
        states=Toy,
        data=ToyData,
        final=[Toy.DONE, Toy.FAILED],
        compensating=Toy.COMPENSATING,
        compensation_failed=Toy.BROKEN,
        aborted=Toy.ABORTED,
    )
    machine.compensation(msg.RefundPayment, confirmed_by=msg.PaymentRefunded)
    machine.compensates_to(Toy.FAILED)
    machine.start(
        ToyStarted,
        key=lambda e: e.job_id,
        init=lambda e: ToyData(job_id=e.job_id),
        to=Toy.WORKING,
        do=on_start,
    )
    machine.on(Toy.WORKING, ToyPoked, to=(Toy.WORKING, Toy.DONE), do=on_poke)
    machine.on(Toy.WORKING, ToyDone, to=Toy.DONE, do=on_done)
    machine.ignore(Toy.WORKING, ToyStarted, why="duplicate")
    return machine


def _working() -> SagaSnapshot:
    return SagaSnapshot(
        saga_id=SAGA_ID,
        workflow="toy-ignore",
        business_key="job-1",
        state=Toy.WORKING.value,
        data={"job_id": "job-1"},
        runtime=RuntimeState(outstanding=frozenset({AWAITED})),
        version=3,
        finished=False,
    )


def _poke(machine: Machine[Toy, ToyData]) -> Any:
    return decide(machine, _working(), incoming_message(ToyPoked(job_id="job-1")), NOW, CONFIG)


def test_an_ignoring_action_records_why_and_changes_nothing() -> None:
    def action(ctx: Ctx, _: ToyPoked) -> None:
        ctx.data.job_id = "changed before deciding"  # dropped: the step changes nothing
        ctx.note("looked at the data")
        ctx.ignore("poke already counted")

    before = _working()
    decision = _poke(_machine(action))

    assert decision.outcome is Outcome.IGNORED
    assert decision.note == "looked at the data; poke already counted"
    assert not decision.changes_saga
    assert (decision.to_state, decision.data, decision.runtime, decision.version) == (
        before.state,
        before.data,
        before.runtime,
        before.version,
    )
    assert (decision.outgoing, decision.timers) == ((), ())


def test_the_same_action_may_transition_when_its_data_says_so() -> None:
    def action(ctx: Ctx, _: ToyPoked) -> None:
        if ctx.data.job_id != "job-1":
            ctx.ignore("not this job")
            return
        ctx.goto(Toy.DONE)

    assert _poke(_machine(action)).outcome is Outcome.TRANSITIONED


def test_an_ignored_reply_keeps_its_command_outstanding() -> None:
    def ignore_done(ctx: Ctx, _: ToyDone) -> None:
        ctx.ignore("not yet")

    machine = _machine(lambda ctx, _: None, on_done=ignore_done)
    decision = decide(
        machine,
        _working(),
        incoming_message(ToyDone(job_id="job-1"), causation_id=AWAITED),
        NOW,
        CONFIG,
    )
    assert decision.outcome is Outcome.IGNORED
    assert decision.runtime.outstanding == frozenset({AWAITED})


@pytest.mark.parametrize(
    "effect",
    [
        lambda ctx: ctx.send(ToyWork(job_id="job-1")),
        lambda ctx: ctx.goto(Toy.DONE),
        lambda ctx: ctx.schedule("later", CONFIG.step_timeout),
        lambda ctx: ctx.push_compensation(msg.RefundPayment(order_id="job-1")),
        lambda ctx: ctx.compensate(Toy.FAILED, "no"),
    ],
    ids=["send", "goto", "schedule", "push_compensation", "compensate"],
)
def test_ignoring_with_other_effects_is_a_definition_error(effect: Callable[[Ctx], object]) -> None:
    def action(ctx: Ctx, _: ToyPoked) -> None:
        effect(ctx)
        ctx.ignore("changed my mind")

    with pytest.raises(ActionError, match="ignored its message but recorded effects"):
        _poke(_machine(action))


def test_a_starting_event_cannot_be_ignored() -> None:
    def start(ctx: Ctx, _: ToyStarted) -> None:
        ctx.ignore("nothing to do")

    machine = _machine(lambda ctx, _: None, on_start=start)
    with pytest.raises(ActionError, match="cannot be ignored"):
        decide(machine, None, incoming_message(ToyStarted(job_id="job-1")), NOW, CONFIG)
