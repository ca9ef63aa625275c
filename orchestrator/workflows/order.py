"""The order saga: payment -> inventory -> shipping, compensated last-in first-out.

  awaiting_payment --PaymentProcessed--> awaiting_inventory --InventoryReserved-->
  awaiting_shipment --OrderShipped--> completed

A failure reply, a step timeout or a customer's cancellation compensates what was done
(RefundPayment, ReleaseInventory, CancelShipment; newest first) and ends in failed or cancelled;
a compensation that is never confirmed ends in compensation_failed for operators to resolve.
A cancellation waits for the step in flight to answer, so the compensation list is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel

from contracts import order as msg
from contracts.base import Event
from orchestrator.engine import Machine, StepContext, Timer


class OrderState(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    AWAITING_INVENTORY = "awaiting_inventory"
    AWAITING_SHIPMENT = "awaiting_shipment"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATION_FAILED = "compensation_failed"
    ABORTED = "aborted"


class OrderData(BaseModel):
    order_id: str
    customer_id: str = ""
    amount_cents: int = 0
    currency: str = ""
    lines: tuple[msg.OrderLine, ...] = ()
    ship_to: msg.Address | None = None
    payment_id: str | None = None
    tracking_number: str | None = None
    cancel_requested: bool = False


Ctx = StepContext[OrderState, OrderData]
STEP_TIMEOUT = Timer("step-timeout")
S = OrderState

machine: Machine[OrderState, OrderData] = Machine(
    "order",
    states=OrderState,
    data=OrderData,
    final=[S.COMPLETED, S.FAILED, S.CANCELLED],
    compensating=S.COMPENSATING,
    compensation_failed=S.COMPENSATION_FAILED,
    aborted=S.ABORTED,
    # Raise with every change of states, edges, timers or compensations (README: Changing a
    # workflow); the snapshot in versions/ fails its test until then.
    version=1,
)
machine.compensation(msg.RefundPayment, confirmed_by=msg.PaymentRefunded)
machine.compensation(msg.ReleaseInventory, confirmed_by=msg.InventoryReleased)
machine.compensation(msg.CancelShipment, confirmed_by=msg.ShipmentCancelled)
machine.compensates_to(S.FAILED, S.CANCELLED)


def _undo(ctx: Ctx, reason: str) -> None:
    """Compensate everything done so far; a requested cancellation ends as cancelled."""
    ctx.cancel_timer(STEP_TIMEOUT.name)
    if ctx.data.cancel_requested:
        ctx.compensate(then=S.CANCELLED, reason="cancelled by customer")
    else:
        ctx.compensate(then=S.FAILED, reason=reason)


# --- start ---------------------------------------------------------------------------------------


def _submitted(ctx: Ctx, event: msg.OrderSubmitted) -> None:
    ctx.send(
        msg.ProcessPayment(
            order_id=event.order_id,
            customer_id=event.customer_id,
            amount_cents=event.amount_cents,
            currency=event.currency,
            card_token=event.card_token,
        )
    )
    ctx.schedule(STEP_TIMEOUT.name, ctx.config.step_timeout)


machine.start(
    msg.OrderSubmitted,
    key=lambda e: e.order_id,
    # The card token is passed on to payments once and deliberately not kept in saga data.
    init=lambda e: OrderData(
        order_id=e.order_id,
        customer_id=e.customer_id,
        amount_cents=e.amount_cents,
        currency=e.currency,
        lines=e.lines,
        ship_to=e.ship_to,
    ),
    to=S.AWAITING_PAYMENT,
    do=_submitted,
)


def _cancelled_before_submitted(ctx: Ctx, event: msg.OrderCancellationRequested) -> None:
    ctx.note("cancelled before the order was submitted; a later submission is ignored")
    ctx.goto(S.CANCELLED, reason=event.reason)


# A cancellation that overtakes its order creates the saga already cancelled: the submission
# that follows finds a finished saga and nothing is charged.
machine.start(
    msg.OrderCancellationRequested,
    key=lambda e: e.order_id,
    init=lambda e: OrderData(order_id=e.order_id, cancel_requested=True),
    to=S.CANCELLED,
    do=_cancelled_before_submitted,
)

# --- forward steps -------------------------------------------------------------------------------


def _paid(ctx: Ctx, event: msg.PaymentProcessed) -> None:
    ctx.data.payment_id = event.payment_id
    ctx.push_compensation(msg.RefundPayment(order_id=ctx.data.order_id))
    if ctx.data.cancel_requested:
        _undo(ctx, "cancelled by customer")
        return
    ctx.send(msg.ReserveInventory(order_id=ctx.data.order_id, lines=ctx.data.lines))
    ctx.schedule(STEP_TIMEOUT.name, ctx.config.step_timeout)
    ctx.goto(S.AWAITING_INVENTORY)


def _payment_failed(ctx: Ctx, event: msg.PaymentFailed) -> None:
    ctx.cancel_timer(STEP_TIMEOUT.name)
    if ctx.data.cancel_requested:
        ctx.goto(S.CANCELLED, reason="cancelled by customer")
    else:
        ctx.goto(S.FAILED, reason=f"payment failed: {event.reason}")


def _reserved(ctx: Ctx, event: msg.InventoryReserved) -> None:
    ctx.push_compensation(msg.ReleaseInventory(order_id=ctx.data.order_id))
    if ctx.data.cancel_requested:
        _undo(ctx, "cancelled by customer")
        return
    assert ctx.data.ship_to is not None
    ctx.send(
        msg.CreateShipment(
            order_id=ctx.data.order_id, ship_to=ctx.data.ship_to, lines=ctx.data.lines
        )
    )
    ctx.schedule(STEP_TIMEOUT.name, ctx.config.step_timeout)
    ctx.goto(S.AWAITING_SHIPMENT)


def _reservation_failed(ctx: Ctx, event: msg.InventoryReservationFailed) -> None:
    _undo(ctx, f"inventory reservation failed: {event.reason}")


def _shipped(ctx: Ctx, event: msg.OrderShipped) -> None:
    ctx.data.tracking_number = event.tracking_number
    ctx.cancel_timer(STEP_TIMEOUT.name)
    if ctx.data.cancel_requested:
        ctx.push_compensation(msg.CancelShipment(order_id=ctx.data.order_id))
        _undo(ctx, "cancelled by customer")
        return
    ctx.goto(S.COMPLETED)


def _shipment_failed(ctx: Ctx, event: msg.ShipmentFailed) -> None:
    _undo(ctx, f"shipment failed: {event.reason}")


def _cancel_requested(ctx: Ctx, event: msg.OrderCancellationRequested) -> None:
    # Wait for the step in flight: its reply tells whether there is one more thing to undo.
    ctx.data.cancel_requested = True
    ctx.note("cancellation requested; compensating after the step in flight answers")


UndoCommand = type[msg.RefundPayment] | type[msg.ReleaseInventory] | type[msg.CancelShipment]


def _timed_out(undo_step: UndoCommand) -> Callable[[Ctx, None], None]:
    def action(ctx: Ctx, _: None) -> None:
        # The step may have taken effect without its reply arriving: undo it too. Workers
        # record a void marker, so the undo also fences a late execution of the step.
        ctx.push_compensation(undo_step(order_id=ctx.data.order_id))
        _undo(ctx, "step timed out")

    return action


def _completed(ctx: Ctx, _: object) -> None:
    # An operator may skip the shipment step: then there is no tracking number to report.
    tracking = ctx.data.tracking_number or "none"
    ctx.publish(msg.OrderCompleted(order_id=ctx.data.order_id, tracking_number=tracking))


def _ended_without_completing(outcome: OrderState) -> Callable[[Ctx, object], None]:
    def action(ctx: Ctx, _: object) -> None:
        reason = ctx.reason or outcome.value
        ctx.publish(
            msg.OrderFailed(order_id=ctx.data.order_id, outcome=outcome.value, reason=reason[:200])
        )

    return action


# Every undo after a successful payment has at least the refund to run: it goes through
# compensating (the engine would refuse a declared target that an action never reaches).
undo = S.COMPENSATING
machine.on(S.AWAITING_PAYMENT, msg.PaymentProcessed, to=(S.AWAITING_INVENTORY, undo), do=_paid)
machine.on(S.AWAITING_PAYMENT, msg.PaymentFailed, to={S.FAILED, S.CANCELLED}, do=_payment_failed)
machine.on(
    S.AWAITING_INVENTORY, msg.InventoryReserved, to=(S.AWAITING_SHIPMENT, undo), do=_reserved
)
machine.on(S.AWAITING_INVENTORY, msg.InventoryReservationFailed, to=undo, do=_reservation_failed)
machine.on(S.AWAITING_SHIPMENT, msg.OrderShipped, to=(S.COMPLETED, undo), do=_shipped)
machine.on(S.AWAITING_SHIPMENT, msg.ShipmentFailed, to=undo, do=_shipment_failed)
machine.on(S.AWAITING_PAYMENT, STEP_TIMEOUT, to=undo, do=_timed_out(msg.RefundPayment))
machine.on(S.AWAITING_INVENTORY, STEP_TIMEOUT, to=undo, do=_timed_out(msg.ReleaseInventory))
machine.on(S.AWAITING_SHIPMENT, STEP_TIMEOUT, to=undo, do=_timed_out(msg.CancelShipment))

IN_FLIGHT = [S.AWAITING_PAYMENT, S.AWAITING_INVENTORY, S.AWAITING_SHIPMENT]
for _state in IN_FLIGHT:
    machine.on(_state, msg.OrderCancellationRequested, to=_state, do=_cancel_requested)
machine.ignore(IN_FLIGHT, msg.OrderSubmitted, why="duplicate submission of a running order")

# Replies that belong to another step. The engine already fences replies to commands it does
# not await, so these can only be operator re-sends; they are recorded and change nothing.
_replies_of: dict[OrderState, tuple[type[Event], ...]] = {
    S.AWAITING_PAYMENT: (msg.PaymentProcessed, msg.PaymentFailed),
    S.AWAITING_INVENTORY: (msg.InventoryReserved, msg.InventoryReservationFailed),
    S.AWAITING_SHIPMENT: (msg.OrderShipped, msg.ShipmentFailed),
}
for _state in IN_FLIGHT:
    others: list[type[Event]] = [r for s, rs in _replies_of.items() if s != _state for r in rs]
    machine.ignore(_state, *others, why="reply of another step")

machine.on_enter(S.COMPLETED, _completed)
machine.on_enter(S.FAILED, _ended_without_completing(S.FAILED))
machine.on_enter(S.CANCELLED, _ended_without_completing(S.CANCELLED))
machine.on_enter(S.COMPENSATION_FAILED, _ended_without_completing(S.COMPENSATION_FAILED))
machine.on_enter(S.ABORTED, _ended_without_completing(S.ABORTED))
machine.validate()
