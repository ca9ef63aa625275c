"""Engine properties of decide(): determinism, unique ids, the order of checks, action rules."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from contracts import order as msg
from orchestrator.engine import (
    DefinitionError,
    EngineConfig,
    Incoming,
    Machine,
    OperatorRequest,
    Outcome,
    RuntimeState,
    UnknownSaga,
    WrongWorkflow,
    decide,
)
from orchestrator.engine.context import ActionError
from orchestrator.workflows.order import OrderState as S
from orchestrator.workflows.order import machine as order_machine
from tests.unit.decider_support import (
    AWAITED,
    COMPENSATION_TIMEOUT,
    CONFIG,
    NOW,
    SAGA_ID,
    STEP_TIMEOUT,
    SagaRun,
    Toy,
    ToyDone,
    ToyPoked,
    ToyRejected,
    ToyStarted,
    ToyWork,
    compensation_entry,
    incoming_message,
    incoming_timer,
    order_message,
    order_snapshot,
    snapshot_after,
    toy,
)

# --- whole sagas, replayed -----------------------------------------------------------------------


def _confirm_all(run: SagaRun) -> None:
    while run.state == S.COMPENSATING:
        run.confirm_compensation()


def _happy(run: SagaRun) -> None:
    run.start()
    for reply in (msg.PaymentProcessed, msg.InventoryReserved, msg.OrderShipped):
        run.reply(reply)


def _shipment_fails(run: SagaRun) -> None:
    run.start()
    run.reply(msg.PaymentProcessed)
    run.reply(msg.InventoryReserved)
    run.reply(msg.ShipmentFailed)
    _confirm_all(run)


def _cancelled_while_shipping(run: SagaRun) -> None:
    run.start()
    run.reply(msg.PaymentProcessed)
    run.reply(msg.InventoryReserved)
    run.deliver(order_message(msg.OrderCancellationRequested))
    run.reply(msg.OrderShipped)
    _confirm_all(run)


def _times_out_then_late_replies(run: SagaRun) -> None:
    run.start()
    run.reply(msg.PaymentProcessed)
    run.fire(STEP_TIMEOUT)
    run.reply(msg.InventoryReserved)  # stale
    _confirm_all(run)
    run.reply(msg.PaymentRefunded)  # finished


def _compensation_stuck(run: SagaRun) -> None:
    run.start()
    run.reply(msg.PaymentProcessed)
    run.reply(msg.InventoryReservationFailed)
    run.fire(COMPENSATION_TIMEOUT)


PATHS: list[Any] = [
    pytest.param(_happy, id="happy"),
    pytest.param(_shipment_fails, id="shipment fails"),
    pytest.param(_cancelled_while_shipping, id="cancelled while shipping"),
    pytest.param(_times_out_then_late_replies, id="timeout, late replies"),
    pytest.param(_compensation_stuck, id="compensation stuck"),
]


@pytest.mark.parametrize("path", PATHS)
def test_same_snapshot_and_incoming_give_the_same_decision(path: Callable[[SagaRun], None]) -> None:
    run = SagaRun()
    path(run)
    assert len(run.inputs) == len(run.decisions) >= 3
    for (snapshot, incoming, now), decision in zip(run.inputs, run.decisions, strict=True):
        kept = copy.deepcopy(snapshot)
        again = decide(order_machine, copy.deepcopy(snapshot), incoming, now, CONFIG)
        assert again == decision
        assert snapshot == kept  # decide never mutates what it was given


@pytest.mark.parametrize("path", PATHS)
def test_no_message_or_timer_id_is_ever_emitted_twice(path: Callable[[SagaRun], None]) -> None:
    run = SagaRun()
    path(run)
    ids = [o.message_id for d in run.decisions if d.changes_saga for o in d.outgoing]
    ids += [t.message_id for d in run.decisions for t in d.timers if t.message_id is not None]
    assert len(ids) == len(set(ids))


def test_message_ids_belong_to_their_saga() -> None:
    first, second = SagaRun(), SagaRun(saga_id=uuid.uuid4())
    _happy(first)
    _happy(second)
    ids = {o.message_id for o in first.commands + first.events}
    assert ids.isdisjoint({o.message_id for o in second.commands + second.events})


def test_message_ids_do_not_depend_on_the_incoming_message_id() -> None:
    # A redelivery under a new broker message id re-makes the same decision, ids included.
    message = order_message(msg.OrderSubmitted)
    first = decide(order_machine, None, incoming_message(message), NOW, CONFIG)
    other = Incoming(uuid.uuid4(), SAGA_ID, message.message_type, message)
    assert decide(order_machine, None, other, NOW, CONFIG) == first


def test_timers_use_now_and_the_configured_step_timeout() -> None:
    config = EngineConfig(step_timeout=timedelta(seconds=7))
    message = order_message(msg.OrderSubmitted)
    later = NOW + timedelta(hours=1)
    decision = decide(order_machine, None, incoming_message(message), later, config)
    (timer,) = decision.timers
    assert (timer.name, timer.due_at) == (STEP_TIMEOUT, later + timedelta(seconds=7))


# --- the order of checks -------------------------------------------------------------------------


def test_non_starting_event_without_saga_is_an_unknown_saga() -> None:
    with pytest.raises(UnknownSaga):
        decide(
            order_machine, None, incoming_message(order_message(msg.PaymentProcessed)), NOW, CONFIG
        )


def test_timer_without_saga_is_an_unknown_saga() -> None:
    with pytest.raises(UnknownSaga):
        decide(order_machine, None, incoming_timer(STEP_TIMEOUT), NOW, CONFIG)


def test_saga_of_another_workflow_is_refused() -> None:
    snapshot = order_snapshot(S.AWAITING_PAYMENT)
    with pytest.raises(WrongWorkflow):
        decide(toy(), snapshot, incoming_message(ToyPoked(job_id="j")), NOW, CONFIG)


def test_finished_beats_stale() -> None:
    # A finished saga waits for nothing: every reply would be stale; FINISHED is recorded.
    snapshot = order_snapshot(S.FAILED)
    reply = incoming_message(order_message(msg.PaymentProcessed), causation_id=AWAITED)
    assert decide(order_machine, snapshot, reply, NOW, CONFIG).outcome == Outcome.FINISHED


def test_stale_beats_explicit_ignore() -> None:
    snapshot = order_snapshot(S.AWAITING_INVENTORY, stack=("RefundPayment",))
    reply = incoming_message(order_message(msg.OrderShipped), causation_id=uuid.uuid4())
    assert decide(order_machine, snapshot, reply, NOW, CONFIG).outcome == Outcome.STALE


def test_finished_flag_alone_finishes() -> None:
    snapshot = order_snapshot(S.AWAITING_PAYMENT)
    done = dataclasses.replace(snapshot, finished=True)
    reply = incoming_message(order_message(msg.PaymentProcessed), causation_id=AWAITED)
    assert decide(order_machine, done, reply, NOW, CONFIG).outcome == Outcome.FINISHED


def test_unhandled_start_event_in_running_saga_is_a_duplicate_start() -> None:
    machine = toy(ignore_duplicate_start=False)
    started = decide(machine, None, incoming_message(ToyStarted(job_id="j")), NOW, CONFIG)
    snapshot = snapshot_after(None, started, machine, SAGA_ID)
    again = decide(machine, snapshot, incoming_message(ToyStarted(job_id="j")), NOW, CONFIG)
    assert again.outcome == Outcome.DUPLICATE_START
    assert not again.changes_saga


def test_undeclared_pair_is_ignored_with_a_note() -> None:
    machine = toy()
    started = decide(machine, None, incoming_message(ToyStarted(job_id="j")), NOW, CONFIG)
    snapshot = snapshot_after(None, started, machine, SAGA_ID)
    poked = decide(machine, snapshot, incoming_message(ToyPoked(job_id="j")), NOW, CONFIG)
    assert (poked.outcome, poked.note) == (Outcome.IGNORED, "not handled in working")


# --- a toy workflow through the engine -----------------------------------------------------------


def _toy_run(machine: Machine[Any, Any] | None = None) -> SagaRun:
    run = SagaRun(machine=machine or toy())
    run.start(ToyStarted(job_id="job-1"))
    return run


def test_toy_compensation_runs_through_the_contract_registry() -> None:
    run = _toy_run()
    (work,) = run.commands
    rejected = run.deliver(ToyRejected(job_id="job-1"), causation_id=work.message_id)
    assert rejected.to_state == Toy.COMPENSATING
    refund = rejected.outgoing[0].message
    assert refund == msg.RefundPayment(order_id="job-1")

    done = run.deliver(
        msg.PaymentRefunded(order_id="job-1", amount_cents=1),
        causation_id=rejected.outgoing[0].message_id,
    )

    assert (done.to_state, done.finished, done.runtime.compensations) == (Toy.FAILED, True, ())
    assert done.runtime.reason == "rejected"


def test_toy_reply_moves_to_its_single_target() -> None:
    run = _toy_run()
    (work,) = run.commands
    done = run.deliver(ToyDone(job_id="job-1"), causation_id=work.message_id)
    assert (done.to_state, done.finished, done.runtime.outstanding) == (Toy.DONE, True, frozenset())


# --- action rules --------------------------------------------------------------------------------


def _poke(machine: Machine[Any, Any]) -> Any:
    run = _toy_run(machine)
    return run.deliver(ToyPoked(job_id="job-1"))


def _goto(state: Toy) -> Callable[[Any, Any], None]:
    return lambda ctx, _: ctx.goto(state)


def test_goto_outside_declared_targets_raises() -> None:
    machine = toy()
    machine.on(Toy.WORKING, ToyPoked, to=Toy.WORKING, do=_goto(Toy.DONE))
    with pytest.raises(ActionError, match=r"\(working, ToyPoked\) may not go to done"):
        _poke(machine)


def test_several_targets_need_a_choice() -> None:
    machine = toy()
    machine.on(Toy.WORKING, ToyPoked, to={Toy.WORKING, Toy.DONE})
    with pytest.raises(ActionError, match="must choose a target state"):
        _poke(machine)


def test_goto_and_compensate_together_raise() -> None:
    def both(ctx: Any, _: Any) -> None:
        ctx.goto(Toy.DONE)
        ctx.compensate(then=Toy.FAILED, reason="x")

    machine = toy()
    machine.on(Toy.WORKING, ToyPoked, to={Toy.DONE, Toy.COMPENSATING}, do=both)
    with pytest.raises(ActionError, match="goto or compensate, not both"):
        _poke(machine)


def test_compensate_to_an_undeclared_compensation_target_raises() -> None:
    machine = toy()
    machine.on(
        Toy.WORKING,
        ToyPoked,
        to=Toy.DONE,
        do=lambda ctx, _: ctx.compensate(then=Toy.DONE, reason="x"),
    )
    with pytest.raises(ActionError, match="not a declared compensation target"):
        _poke(machine)


def test_compensation_into_an_undeclared_compensating_state_raises() -> None:
    def undo(ctx: Any, _: Any) -> None:
        ctx.push_compensation(msg.RefundPayment(order_id="job-1"))
        ctx.compensate(then=Toy.FAILED, reason="x")

    machine = toy()
    machine.on(Toy.WORKING, ToyPoked, to=Toy.FAILED, do=undo)
    with pytest.raises(ActionError, match="may not go to compensating"):
        _poke(machine)


def test_compensation_with_nothing_to_undo_ends_at_once() -> None:
    machine = toy()
    machine.on(
        Toy.WORKING,
        ToyPoked,
        to=Toy.FAILED,
        do=lambda ctx, _: ctx.compensate(then=Toy.FAILED, reason="nothing done"),
    )
    decision = _poke(machine)
    assert (decision.to_state, decision.finished, decision.outgoing) == (Toy.FAILED, True, ())
    assert decision.runtime.reason == "nothing done"


def test_pushing_an_unregistered_compensation_raises() -> None:
    machine = toy()
    machine.on(
        Toy.WORKING,
        ToyPoked,
        to=Toy.WORKING,
        do=lambda ctx, _: ctx.push_compensation(ToyWork(job_id="j")),
    )
    with pytest.raises(DefinitionError, match="not a registered compensation"):
        _poke(machine)


# --- runtime bookkeeping -------------------------------------------------------------------------


def test_runtime_state_survives_its_json_column() -> None:
    runtime = RuntimeState(
        outstanding=frozenset({AWAITED, uuid.uuid4()}),
        compensations=(compensation_entry("RefundPayment"), compensation_entry("ReleaseInventory")),
        compensation_target="cancelled",
        reason="cancelled by customer",
    )
    assert RuntimeState.from_json(runtime.to_json()) == runtime
    assert RuntimeState.from_json({}) == RuntimeState()


@pytest.mark.parametrize("outcome", list(Outcome))
def test_only_started_and_transitioned_change_the_saga(outcome: Outcome) -> None:
    started = decide(
        order_machine, None, incoming_message(order_message(msg.OrderSubmitted)), NOW, CONFIG
    )
    changes = dataclasses.replace(started, outcome=outcome).changes_saga
    assert changes == (outcome in {Outcome.STARTED, Outcome.TRANSITIONED})


# --- entry actions: their timers survive on every path into the state ----------------------------


def _toy_with_entry_timer() -> Machine[Any, Any]:
    """The toy workflow whose `failed` state schedules a follow-up timer on entry."""
    machine = toy()

    def _remind(ctx: Any, _: Any) -> None:
        ctx.schedule("follow-up", timedelta(hours=1))

    machine.on_enter(Toy.FAILED, _remind)
    return machine


def _rejected_toy(machine: Machine[Any, Any]) -> SagaRun:
    """A toy saga whose work was rejected: it compensates (one refund on the stack)."""
    run = SagaRun(machine=machine)
    run.deliver(ToyStarted(job_id="job-1"))
    run.deliver(ToyRejected(job_id="job-1"), causation_id=run.commands[-1].message_id)
    assert run.state == Toy.COMPENSATING
    return run


def test_entry_action_timer_is_kept_when_compensation_finishes() -> None:
    run = _rejected_toy(_toy_with_entry_timer())

    decision = run.deliver(
        msg.PaymentRefunded(order_id="job-1", amount_cents=0),
        causation_id=run.commands[-1].message_id,
    )

    assert decision.to_state == Toy.FAILED
    follow_up = {timer.name: timer for timer in decision.timers}.get("follow-up")
    assert follow_up is not None and follow_up.due_at == NOW + timedelta(hours=1)


def test_entry_action_timer_is_kept_on_an_operator_step() -> None:
    run = _rejected_toy(_toy_with_entry_timer())

    decision = run.operate(OperatorRequest("skip", operator="ops", reason="refunded by hand"))

    assert decision.to_state == Toy.FAILED
    assert "follow-up" in {timer.name for timer in decision.timers}
