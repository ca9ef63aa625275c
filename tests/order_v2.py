"""Order workflow version 2, as a team would write it next to version 1 (a test fixture).

Against version 1 (orchestrator/workflows/order.py) it renames a state and adds a step:

  awaiting_payment --PaymentProcessed--> reserving_stock (was awaiting_inventory)
  --InventoryReserved--> packing (new: waits PACKING_TIME on a timer, nothing in flight)
  --timer packing--> awaiting_shipment --OrderShipped--> completed

Version 1 stays loaded beside it (WORKFLOWS below), so sagas started under version 1 finish
under version 1's machine. Actions that did not change are version 1's own functions.
`python -m orchestrator` runs these workflows with
SAGALINE_WORKFLOWS=tests.order_v2:WORKFLOWS.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any, cast

from contracts import order as msg
from contracts.base import Event
from orchestrator.engine import Machine, StepContext, Timer
from orchestrator.engine.registry import Workflows
from orchestrator.workflows import documents, enrollment
from orchestrator.workflows import order as v1
from orchestrator.workflows.order import STEP_TIMEOUT, OrderData

PACKING = Timer("packing")
PACKING_TIME = timedelta(seconds=1)


class OrderStateV2(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    RESERVING_STOCK = "reserving_stock"
    PACKING = "packing"
    AWAITING_SHIPMENT = "awaiting_shipment"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATION_FAILED = "compensation_failed"
    ABORTED = "aborted"


S = OrderStateV2
Ctx = StepContext[Any, OrderData]


def build(*, rename: bool = True) -> Machine[Any, OrderData]:
    """Version 2; `rename=False` leaves out its `continues` mapping (a stranded state).

    Typed with Any states: the actions it shares with version 1 take version 1's contexts."""
    machine: Machine[Any, OrderData] = Machine(
        "order",
        states=OrderStateV2,
        data=OrderData,
        final=[S.COMPLETED, S.FAILED, S.CANCELLED],
        compensating=S.COMPENSATING,
        compensation_failed=S.COMPENSATION_FAILED,
        aborted=S.ABORTED,
        version=2,
    )
    if rename:
        machine.continues({v1.S.AWAITING_INVENTORY.value: S.RESERVING_STOCK})
    machine.compensation(msg.RefundPayment, confirmed_by=msg.PaymentRefunded)
    machine.compensation(msg.ReleaseInventory, confirmed_by=msg.InventoryReleased)
    machine.compensation(msg.CancelShipment, confirmed_by=msg.ShipmentCancelled)
    machine.compensates_to(S.FAILED, S.CANCELLED)
    _steps(machine)
    machine.validate()
    return machine


def _paid(ctx: Ctx, event: msg.PaymentProcessed) -> None:
    ctx.data.payment_id = event.payment_id
    ctx.push_compensation(msg.RefundPayment(order_id=ctx.data.order_id))
    if ctx.data.cancel_requested:
        v1._undo(ctx, "cancelled by customer")
        return
    ctx.send(msg.ReserveInventory(order_id=ctx.data.order_id, lines=ctx.data.lines))
    ctx.schedule(STEP_TIMEOUT.name, ctx.config.step_timeout)
    ctx.goto(S.RESERVING_STOCK)


def _reserved(ctx: Ctx, event: msg.InventoryReserved) -> None:
    ctx.push_compensation(msg.ReleaseInventory(order_id=ctx.data.order_id))
    if ctx.data.cancel_requested:
        v1._undo(ctx, "cancelled by customer")
        return
    # The new step: nothing is in flight while the order is packed.
    ctx.cancel_timer(STEP_TIMEOUT.name)
    ctx.schedule(PACKING.name, PACKING_TIME)
    ctx.goto(S.PACKING)


def _packed(ctx: Ctx, _: None) -> None:
    assert ctx.data.ship_to is not None
    ctx.note("packed")
    ctx.send(
        msg.CreateShipment(
            order_id=ctx.data.order_id, ship_to=ctx.data.ship_to, lines=ctx.data.lines
        )
    )
    ctx.schedule(STEP_TIMEOUT.name, ctx.config.step_timeout)
    ctx.goto(S.AWAITING_SHIPMENT)


def _cancelled_while_packing(ctx: Ctx, _: msg.OrderCancellationRequested) -> None:
    # Nothing is in flight: undo at once.
    ctx.data.cancel_requested = True
    ctx.cancel_timer(PACKING.name)
    v1._undo(ctx, "cancelled by customer")


def _steps(machine: Machine[Any, OrderData]) -> None:
    for event in (msg.OrderSubmitted, msg.OrderCancellationRequested):
        unchanged = v1.machine.starts[event.message_type]
        machine.start(
            event,
            key=unchanged.key,
            init=cast(Callable[[Any], OrderData], unchanged.init),
            to=[S(t) for t in unchanged.transition.targets],
            do=unchanged.transition.action,
        )
    undo = S.COMPENSATING
    on = machine.on
    on(S.AWAITING_PAYMENT, msg.PaymentProcessed, to=(S.RESERVING_STOCK, undo), do=_paid)
    on(S.AWAITING_PAYMENT, msg.PaymentFailed, to={S.FAILED, S.CANCELLED}, do=v1._payment_failed)
    on(S.RESERVING_STOCK, msg.InventoryReserved, to=(S.PACKING, undo), do=_reserved)
    on(S.RESERVING_STOCK, msg.InventoryReservationFailed, to=undo, do=v1._reservation_failed)
    on(S.PACKING, PACKING, to=S.AWAITING_SHIPMENT, do=_packed)
    on(S.PACKING, msg.OrderCancellationRequested, to=undo, do=_cancelled_while_packing)
    on(S.AWAITING_SHIPMENT, msg.OrderShipped, to=(S.COMPLETED, undo), do=v1._shipped)
    on(S.AWAITING_SHIPMENT, msg.ShipmentFailed, to=undo, do=v1._shipment_failed)
    on(S.AWAITING_PAYMENT, STEP_TIMEOUT, to=undo, do=v1._timed_out(msg.RefundPayment))
    on(S.RESERVING_STOCK, STEP_TIMEOUT, to=undo, do=v1._timed_out(msg.ReleaseInventory))
    on(S.AWAITING_SHIPMENT, STEP_TIMEOUT, to=undo, do=v1._timed_out(msg.CancelShipment))
    in_flight = [S.AWAITING_PAYMENT, S.RESERVING_STOCK, S.AWAITING_SHIPMENT]
    for state in in_flight:
        on(state, msg.OrderCancellationRequested, to=state, do=v1._cancel_requested)
        machine.ignore(state, PACKING, why="packing timer of an earlier attempt")
    machine.ignore(S.PACKING, STEP_TIMEOUT, why="no step in flight while packing")
    machine.ignore([*in_flight, S.PACKING], msg.OrderSubmitted, why="duplicate submission")
    replies_of: dict[OrderStateV2, tuple[type[Event], ...]] = {
        S.AWAITING_PAYMENT: (msg.PaymentProcessed, msg.PaymentFailed),
        S.RESERVING_STOCK: (msg.InventoryReserved, msg.InventoryReservationFailed),
        S.AWAITING_SHIPMENT: (msg.OrderShipped, msg.ShipmentFailed),
        S.PACKING: (),
    }
    for state in replies_of:
        others = [r for s, rs in replies_of.items() if s != state for r in rs]
        machine.ignore(state, *others, why="reply of another step")
    machine.on_enter(S.COMPLETED, v1._completed)
    for final in (S.FAILED, S.CANCELLED, S.COMPENSATION_FAILED, S.ABORTED):
        machine.on_enter(final, v1._ended_without_completing(v1.S(final.value)))


machine = build()

WORKFLOWS = Workflows.of(v1.machine, machine, enrollment.machine, documents.machine)
"""What an orchestrator runs once version 2 is deployed: version 1 stays loaded."""
