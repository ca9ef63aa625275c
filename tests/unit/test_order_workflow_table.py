"""The order decider as a given-event / expect-commands table, one decide() call per row.

Each row: a saga in some state (cancel flag, compensation stack bottom-first; it waits for the
command AWAITED), one incoming message or timer, and everything the decision must contain.
Replies cite AWAITED as causation unless the row says otherwise. The table must take every edge
of `machine.edges()`, so a new transition without a row fails `test_every_edge_...`.
Row ids start with the state: P, I, SH = awaiting payment, inventory, shipment; C = compensating.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import pytest

from contracts import order as msg
from contracts.base import Message, ReplyEvent
from orchestrator.engine import Incoming, OperatorRequest, Outcome, SagaSnapshot, Timer, decide
from orchestrator.workflows.order import OrderState as S
from orchestrator.workflows.order import machine
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
    order_message,
    order_snapshot,
    published,
    sent_commands,
    stack_of,
    timer_changes,
)

REFUND, RELEASE, CANCEL_SHIP = "RefundPayment", "ReleaseInventory", "CancelShipment"
SET_STEP, CANCEL_STEP = f"set {STEP_TIMEOUT}", f"cancel {STEP_TIMEOUT}"
SET_COMP, CANCEL_COMP = f"set {COMPENSATION_TIMEOUT}", f"cancel {COMPENSATION_TIMEOUT}"
STEP, COMP = Timer(STEP_TIMEOUT), Timer(COMPENSATION_TIMEOUT)

PAYING, RESERVING, SHIPPING = S.AWAITING_PAYMENT, S.AWAITING_INVENTORY, S.AWAITING_SHIPMENT
UNDOING = S.COMPENSATING
PAID, PAY_FAILED = msg.PaymentProcessed, msg.PaymentFailed
RESERVED, RESERVE_FAILED = msg.InventoryReserved, msg.InventoryReservationFailed
SHIPPED, SHIP_FAILED = msg.OrderShipped, msg.ShipmentFailed
REFUNDED, RELEASED, SHIP_CANCELLED = (
    msg.PaymentRefunded,
    msg.InventoryReleased,
    msg.ShipmentCancelled,
)
SUBMIT, CANCEL = msg.OrderSubmitted, msg.OrderCancellationRequested
ABORT = OperatorRequest("abort", operator="ops@example", reason="stuck for a day")

T, IGNORED, STALE, FINISHED = (
    Outcome.TRANSITIONED,
    Outcome.IGNORED,
    Outcome.STALE,
    Outcome.FINISHED,
)


@dataclass(frozen=True)
class Row:
    id: str
    state: S | None
    """None: no saga exists yet."""
    on: type[Message] | Timer | OperatorRequest
    outcome: Outcome
    to: S
    cancel: bool = False
    stack: tuple[str, ...] = ()
    sends: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    timers: Collection[str] = ()
    stack_after: tuple[str, ...] | None = None
    """None: the stack is unchanged."""
    ends_as: S | None = None
    """The final state a compensation in progress will end in."""
    causation: Literal["awaited", "other", "none"] = "awaited"

    @property
    def trigger(self) -> str:
        if isinstance(self.on, OperatorRequest):
            return f"operator:{self.on.action}"
        return self.on.trigger if isinstance(self.on, Timer) else self.on.message_type

    @property
    def edge(self) -> tuple[str | None, str, str] | None:
        if self.outcome not in (Outcome.STARTED, Outcome.TRANSITIONED):
            return None
        return (None if self.state is None else self.state.value, self.trigger, self.to.value)


IN_FLIGHT_STACK = {PAYING: (), RESERVING: (REFUND,), SHIPPING: (REFUND, RELEASE)}
"""What a saga has to undo while it waits in each forward state."""

# fmt: off
ROWS = [
    # --- no saga yet ---------------------------------------------------------------------------
    Row("start: submitted -> ProcessPayment", None, SUBMIT, Outcome.STARTED, PAYING,
        sends=("ProcessPayment",), timers={SET_STEP}),
    Row("start: cancellation overtakes its order", None, CANCEL, Outcome.STARTED, S.CANCELLED,
        cancel=True, publishes=("OrderFailed(cancelled)",)),
    # --- awaiting payment ----------------------------------------------------------------------
    Row("P: paid -> ReserveInventory", PAYING, PAID, T, RESERVING, sends=("ReserveInventory",),
        timers={SET_STEP}, stack_after=(REFUND,)),
    Row("P: payment failed -> failed", PAYING, PAY_FAILED, T, S.FAILED,
        publishes=("OrderFailed(failed)",), timers={CANCEL_STEP}),
    Row("P: cancelled, payment failed -> cancelled", PAYING, PAY_FAILED, T, S.CANCELLED,
        cancel=True, publishes=("OrderFailed(cancelled)",), timers={CANCEL_STEP}),
    Row("P: cancellation requested -> wait for payment", PAYING, CANCEL, T, PAYING),
    Row("P: cancellation requested again", PAYING, CANCEL, T, PAYING, cancel=True),
    Row("P: cancelled, paid -> RefundPayment", PAYING, PAID, T, UNDOING, cancel=True,
        sends=(REFUND,), timers={CANCEL_STEP, SET_COMP}, stack_after=(REFUND,),
        ends_as=S.CANCELLED),
    Row("P: timeout -> RefundPayment", PAYING, STEP, T, UNDOING, sends=(REFUND,),
        timers={CANCEL_STEP, SET_COMP}, stack_after=(REFUND,), ends_as=S.FAILED),
    Row("P: cancelled, timeout -> RefundPayment", PAYING, STEP, T, UNDOING, cancel=True,
        sends=(REFUND,), timers={CANCEL_STEP, SET_COMP}, stack_after=(REFUND,),
        ends_as=S.CANCELLED),
    Row("P: duplicate submission", PAYING, SUBMIT, IGNORED, PAYING),
    Row("P: paid citing another command", PAYING, PAID, STALE, PAYING, causation="other"),
    Row("P: paid without causation", PAYING, PAID, STALE, PAYING, causation="none"),
    Row("P: stray compensation timer", PAYING, COMP, IGNORED, PAYING),
    # --- awaiting inventory --------------------------------------------------------------------
    Row("I: reserved -> CreateShipment", RESERVING, RESERVED, T, SHIPPING, stack=(REFUND,),
        sends=("CreateShipment",), timers={SET_STEP}, stack_after=(REFUND, RELEASE)),
    Row("I: reservation failed -> RefundPayment", RESERVING, RESERVE_FAILED, T, UNDOING,
        stack=(REFUND,), sends=(REFUND,), timers={CANCEL_STEP, SET_COMP}, ends_as=S.FAILED),
    Row("I: cancelled, reservation failed -> RefundPayment", RESERVING, RESERVE_FAILED, T, UNDOING,
        cancel=True, stack=(REFUND,), sends=(REFUND,), timers={CANCEL_STEP, SET_COMP},
        ends_as=S.CANCELLED),
    Row("I: cancelled, reserved -> ReleaseInventory", RESERVING, RESERVED, T, UNDOING, cancel=True,
        stack=(REFUND,), sends=(RELEASE,), timers={CANCEL_STEP, SET_COMP},
        stack_after=(REFUND, RELEASE), ends_as=S.CANCELLED),
    Row("I: timeout -> ReleaseInventory first", RESERVING, STEP, T, UNDOING, stack=(REFUND,),
        sends=(RELEASE,), timers={CANCEL_STEP, SET_COMP}, stack_after=(REFUND, RELEASE),
        ends_as=S.FAILED),
    Row("I: cancelled, timeout -> ReleaseInventory first", RESERVING, STEP, T, UNDOING, cancel=True,
        stack=(REFUND,), sends=(RELEASE,), timers={CANCEL_STEP, SET_COMP},
        stack_after=(REFUND, RELEASE), ends_as=S.CANCELLED),
    Row("I: cancellation requested -> wait for inventory", RESERVING, CANCEL, T, RESERVING,
        stack=(REFUND,)),
    Row("I: duplicate submission", RESERVING, SUBMIT, IGNORED, RESERVING, stack=(REFUND,)),
    Row("I: reserved citing another command", RESERVING, RESERVED, STALE, RESERVING,
        stack=(REFUND,), causation="other"),
    Row("I: late payment reply", RESERVING, PAID, STALE, RESERVING, stack=(REFUND,),
        causation="other"),
    # --- awaiting shipment ---------------------------------------------------------------------
    Row("SH: shipped -> completed", SHIPPING, SHIPPED, T, S.COMPLETED, stack=(REFUND, RELEASE),
        publishes=("OrderCompleted",), timers={CANCEL_STEP}),
    Row("SH: shipment failed -> ReleaseInventory first", SHIPPING, SHIP_FAILED, T, UNDOING,
        stack=(REFUND, RELEASE), sends=(RELEASE,), timers={CANCEL_STEP, SET_COMP},
        ends_as=S.FAILED),
    Row("SH: cancelled, shipment failed -> ReleaseInventory first", SHIPPING, SHIP_FAILED, T,
        UNDOING, cancel=True, stack=(REFUND, RELEASE), sends=(RELEASE,),
        timers={CANCEL_STEP, SET_COMP}, ends_as=S.CANCELLED),
    Row("SH: cancelled, shipped -> CancelShipment first", SHIPPING, SHIPPED, T, UNDOING,
        cancel=True, stack=(REFUND, RELEASE), sends=(CANCEL_SHIP,), timers={CANCEL_STEP, SET_COMP},
        stack_after=(REFUND, RELEASE, CANCEL_SHIP), ends_as=S.CANCELLED),
    Row("SH: timeout -> CancelShipment first", SHIPPING, STEP, T, UNDOING, stack=(REFUND, RELEASE),
        sends=(CANCEL_SHIP,), timers={CANCEL_STEP, SET_COMP},
        stack_after=(REFUND, RELEASE, CANCEL_SHIP), ends_as=S.FAILED),
    Row("SH: cancelled, timeout -> CancelShipment first", SHIPPING, STEP, T, UNDOING, cancel=True,
        stack=(REFUND, RELEASE), sends=(CANCEL_SHIP,), timers={CANCEL_STEP, SET_COMP},
        stack_after=(REFUND, RELEASE, CANCEL_SHIP), ends_as=S.CANCELLED),
    Row("SH: cancellation requested -> wait for shipment", SHIPPING, CANCEL, T, SHIPPING,
        stack=(REFUND, RELEASE)),
    Row("SH: duplicate submission", SHIPPING, SUBMIT, IGNORED, SHIPPING, stack=(REFUND, RELEASE)),
    Row("SH: shipped citing another command", SHIPPING, SHIPPED, STALE, SHIPPING,
        stack=(REFUND, RELEASE), causation="other"),
    # --- compensating (the saga waits for the top compensation's confirmation) -----------------
    Row("C: shipment cancelled -> ReleaseInventory", UNDOING, SHIP_CANCELLED, T, UNDOING,
        cancel=True, stack=(REFUND, RELEASE, CANCEL_SHIP), sends=(RELEASE,), timers={SET_COMP},
        stack_after=(REFUND, RELEASE), ends_as=S.CANCELLED),
    Row("C: inventory released -> RefundPayment", UNDOING, RELEASED, T, UNDOING,
        stack=(REFUND, RELEASE), sends=(REFUND,), timers={SET_COMP}, stack_after=(REFUND,),
        ends_as=S.FAILED),
    Row("C: refunded, last one -> failed", UNDOING, REFUNDED, T, S.FAILED, stack=(REFUND,),
        publishes=("OrderFailed(failed)",), timers={CANCEL_COMP}, stack_after=()),
    Row("C: refunded, last one -> cancelled", UNDOING, REFUNDED, T, S.CANCELLED, cancel=True,
        stack=(REFUND,), publishes=("OrderFailed(cancelled)",), timers={CANCEL_COMP},
        stack_after=()),
    # Stacks the order workflow never builds; the engine pops any stack the same way.
    Row("C: refunded, more below -> ReleaseInventory", UNDOING, REFUNDED, T, UNDOING,
        stack=(RELEASE, REFUND), sends=(RELEASE,), timers={SET_COMP}, stack_after=(RELEASE,),
        ends_as=S.FAILED),
    Row("C: released, last one -> failed", UNDOING, RELEASED, T, S.FAILED, stack=(RELEASE,),
        publishes=("OrderFailed(failed)",), timers={CANCEL_COMP}, stack_after=()),
    Row("C: released, last one -> cancelled", UNDOING, RELEASED, T, S.CANCELLED, cancel=True,
        stack=(RELEASE,), publishes=("OrderFailed(cancelled)",), timers={CANCEL_COMP},
        stack_after=()),
    Row("C: shipment cancelled, last one -> failed", UNDOING, SHIP_CANCELLED, T, S.FAILED,
        stack=(CANCEL_SHIP,), publishes=("OrderFailed(failed)",), timers={CANCEL_COMP},
        stack_after=()),
    Row("C: shipment cancelled, last one -> cancelled", UNDOING, SHIP_CANCELLED, T, S.CANCELLED,
        cancel=True, stack=(CANCEL_SHIP,), publishes=("OrderFailed(cancelled)",),
        timers={CANCEL_COMP}, stack_after=()),
    Row("C: compensation timeout -> compensation_failed", UNDOING, COMP, T, S.COMPENSATION_FAILED,
        stack=(REFUND, RELEASE), publishes=("OrderFailed(compensation_failed)",)),
    Row("C: confirmation of another compensation", UNDOING, REFUNDED, IGNORED, UNDOING,
        stack=(REFUND, RELEASE)),
    Row("C: confirmation citing another command", UNDOING, RELEASED, STALE, UNDOING,
        stack=(REFUND, RELEASE), causation="other"),
    Row("C: late forward reply", UNDOING, SHIPPED, STALE, UNDOING, stack=(REFUND, RELEASE),
        causation="other"),
    Row("C: forward reply citing the compensation", UNDOING, SHIP_FAILED, IGNORED, UNDOING,
        stack=(REFUND, RELEASE)),
    Row("C: stray step timeout", UNDOING, STEP, IGNORED, UNDOING, stack=(REFUND,)),
    Row("C: cancellation requested", UNDOING, CANCEL, IGNORED, UNDOING, stack=(REFUND,)),
    Row("C: duplicate submission", UNDOING, SUBMIT, IGNORED, UNDOING, stack=(REFUND,)),
    # --- an operator aborts an unfinished saga: nothing more is sent or undone -----------------
    Row("P: operator aborts", PAYING, ABORT, T, S.ABORTED, publishes=("OrderFailed(aborted)",)),
    Row("I: operator aborts", RESERVING, ABORT, T, S.ABORTED, stack=(REFUND,),
        publishes=("OrderFailed(aborted)",)),
    Row("SH: operator aborts", SHIPPING, ABORT, T, S.ABORTED, cancel=True, stack=(REFUND, RELEASE),
        publishes=("OrderFailed(aborted)",)),
    Row("C: operator aborts", UNDOING, ABORT, T, S.ABORTED, stack=(REFUND, RELEASE),
        publishes=("OrderFailed(aborted)",)),
    # --- finished sagas record and ignore everything -------------------------------------------
    Row("completed: submission", S.COMPLETED, SUBMIT, FINISHED, S.COMPLETED),
    Row("completed: cancellation", S.COMPLETED, CANCEL, FINISHED, S.COMPLETED),
    Row("completed: late shipment reply", S.COMPLETED, SHIPPED, FINISHED, S.COMPLETED),
    Row("failed: late payment reply", S.FAILED, PAID, FINISHED, S.FAILED),
    Row("failed: step timeout", S.FAILED, STEP, FINISHED, S.FAILED),
    Row("cancelled: submission", S.CANCELLED, SUBMIT, FINISHED, S.CANCELLED, cancel=True),
    Row("compensation_failed: late confirmation", S.COMPENSATION_FAILED, REFUNDED, FINISHED,
        S.COMPENSATION_FAILED, stack=(REFUND,)),
    Row("compensation_failed: compensation timeout", S.COMPENSATION_FAILED, COMP, FINISHED,
        S.COMPENSATION_FAILED, stack=(REFUND,)),
]
# fmt: on


def given(r: Row) -> SagaSnapshot | None:
    if r.state is None:
        return None
    if r.state is not UNDOING:
        return order_snapshot(r.state, cancel=r.cancel, stack=r.stack)
    # As the workflow chose when compensation began: the cancel flag decides the final state.
    ends_as = S.CANCELLED if r.cancel else S.FAILED
    reason = "cancelled by customer" if r.cancel else "shipment failed: no courier"
    return order_snapshot(
        UNDOING, cancel=r.cancel, stack=r.stack, compensation_target=ends_as, reason=reason
    )


def incoming_for(r: Row) -> Incoming:
    if isinstance(r.on, OperatorRequest):
        return incoming_operator(r.on)
    if isinstance(r.on, Timer):
        return incoming_timer(r.on.name)
    message = order_message(r.on)
    causation: uuid.UUID | None = None
    if isinstance(message, ReplyEvent):
        causation = {"awaited": AWAITED, "other": OTHER, "none": None}[r.causation]
    return incoming_message(message, causation_id=causation)


@pytest.mark.parametrize("r", ROWS, ids=lambda r: r.id)
def test_order_decider(r: Row) -> None:
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

    if before is None:
        assert decision.version == 1
        assert decision.business_key == "order-1"
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
    elif r.to is S.COMPENSATING:
        expected = sent  # forward commands in flight are no longer awaited
        assert len(sent) == 1
        assert r.ends_as is not None, "rows into compensating say how it will end"
        assert decision.runtime.compensation_target == r.ends_as
    else:
        earlier = set() if before is None else set(before.runtime.outstanding)
        expected = (earlier - {incoming.causation_id}) | sent
    assert decision.runtime.outstanding == expected
    requested = r.on is CANCEL and decision.changes_saga
    assert decision.data["cancel_requested"] == (r.cancel or requested)


@pytest.mark.parametrize(
    "pair", sorted(machine.ignores), ids=[f"{s}: {t}" for s, t in sorted(machine.ignores)]
)
def test_explicitly_ignored_pair_changes_nothing(pair: tuple[str, str]) -> None:
    state, trigger = S(pair[0]), pair[1]
    before = order_snapshot(state, stack=IN_FLIGHT_STACK[state])
    message = order_message(machine.event_classes[trigger])
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
