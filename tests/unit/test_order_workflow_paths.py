"""Whole order sagas driven through decide(): each worker reply cites the command it answers.

The single-step table (test_order_workflow_table.py) proves each transition; these paths prove
the conversation: which commands go out in which order, what is published at the end, and that
late or repeated messages change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import pytest

from contracts import order as msg
from contracts.base import ReplyEvent
from orchestrator.engine import Decision, OperatorRefused, OperatorRequest, Outcome
from orchestrator.workflows.order import OrderState as S
from tests.unit.decider_support import (
    CARD_TOKEN,
    COMPENSATION_TIMEOUT,
    CONFIG,
    NOW,
    ORDER_ID,
    STEP_TIMEOUT,
    SagaRun,
    order_message,
)

FORWARD = ["ProcessPayment", "ReserveInventory", "CreateShipment"]
SUCCESS: list[type[ReplyEvent]] = [msg.PaymentProcessed, msg.InventoryReserved, msg.OrderShipped]
FAILURE: list[type[ReplyEvent]] = [
    msg.PaymentFailed,
    msg.InventoryReservationFailed,
    msg.ShipmentFailed,
]
UNDO = ["RefundPayment", "ReleaseInventory", "CancelShipment"]
"""UNDO[i] undoes FORWARD[i]."""

STEPS = [S.AWAITING_PAYMENT, S.AWAITING_INVENTORY, S.AWAITING_SHIPMENT]


def run_to(step: int) -> SagaRun:
    """A saga waiting for the reply to FORWARD[step] (every earlier step succeeded)."""
    run = SagaRun()
    run.start()
    for reply in SUCCESS[:step]:
        run.reply(reply)
    assert run.state == STEPS[step]
    return run


def confirm_all(run: SagaRun) -> list[Decision]:
    decisions = []
    while run.state == S.COMPENSATING:
        decisions.append(run.confirm_compensation())
    return decisions


def test_happy_path() -> None:
    run = SagaRun()
    started = run.start()
    assert started.outcome == Outcome.STARTED

    for reply in SUCCESS:
        assert run.reply(reply).outcome == Outcome.TRANSITIONED

    assert run.state == S.COMPLETED
    assert run.snapshot is not None and run.snapshot.finished
    assert run.command_types() == FORWARD
    assert run.event_summaries() == ["OrderCompleted"]
    completed = run.events[0].message
    assert completed == msg.OrderCompleted(order_id=ORDER_ID, tracking_number="trk-1")
    assert run.runtime.outstanding == frozenset()
    assert run.timers == {}
    # The saga keeps the undo list of a completed order (nothing was undone).
    assert [c.command_type for c in run.runtime.compensations] == UNDO[:2]
    assert [d.version for d in run.decisions] == [1, 2, 3, 4]


def test_commands_carry_the_order() -> None:
    run = run_to(2)
    payment, reservation, shipment = (o.message for o in run.commands)
    assert payment == msg.ProcessPayment(
        order_id=ORDER_ID,
        customer_id="cust-1",
        amount_cents=12_345,
        currency="EUR",
        card_token=CARD_TOKEN,
    )
    submitted = order_message(msg.OrderSubmitted)
    assert isinstance(submitted, msg.OrderSubmitted)
    assert isinstance(reservation, msg.ReserveInventory)
    assert reservation.lines == submitted.lines
    assert isinstance(shipment, msg.CreateShipment)
    assert shipment.ship_to.city == "Berlin"


def test_card_token_is_not_kept_in_saga_data() -> None:
    run = SagaRun()
    decision = run.start()
    assert CARD_TOKEN not in repr(decision.data)
    assert CARD_TOKEN not in repr(decision.runtime.to_json())


def test_step_timer_follows_the_step_in_flight() -> None:
    run = SagaRun()
    run.start()
    first = run.timers[STEP_TIMEOUT]
    run.reply(msg.PaymentProcessed)
    second = run.timers[STEP_TIMEOUT]
    assert first.due_at == second.due_at == NOW + CONFIG.step_timeout
    assert first.message_id != second.message_id  # the moved timer is a new timer row


def test_payment_failed_ends_failed_without_compensation() -> None:
    run = run_to(0)
    run.reply(msg.PaymentFailed)

    assert run.state == S.FAILED
    assert run.command_types() == FORWARD[:1]
    (failed,) = (o.message for o in run.events)
    assert failed == msg.OrderFailed(
        order_id=ORDER_ID, outcome="failed", reason="payment failed: card declined"
    )
    assert run.timers == {}


@pytest.mark.parametrize(
    ("step", "undo"),
    [
        pytest.param(1, ["RefundPayment"], id="inventory fails: refund"),
        pytest.param(
            2, ["ReleaseInventory", "RefundPayment"], id="shipment fails: release, refund"
        ),
    ],
)
def test_failed_step_compensates_last_in_first_out(step: int, undo: list[str]) -> None:
    run = run_to(step)
    run.reply(FAILURE[step])
    assert run.state == S.COMPENSATING
    assert run.outstanding_types() == undo[:1]

    confirm_all(run)

    assert run.state == S.FAILED
    assert run.command_types() == FORWARD[: step + 1] + undo
    (failed,) = (o.message for o in run.events)
    assert isinstance(failed, msg.OrderFailed)
    assert failed.outcome == "failed"
    assert failed.reason.startswith(("inventory reservation failed", "shipment failed"))
    assert run.runtime.compensations == ()
    assert run.timers == {}


def test_each_compensation_waits_for_its_confirmation() -> None:
    run = run_to(2)
    run.reply(msg.ShipmentFailed)
    # The refund is only sent once the release is confirmed, never both at once.
    assert run.command_types()[-1] == "ReleaseInventory"
    assert run.last_command(msg.RefundPayment) is None
    released = run.confirm_compensation()
    assert (released.to_state, [o.message.message_type for o in released.outgoing]) == (
        S.COMPENSATING,
        ["RefundPayment"],
    )
    assert run.timers[COMPENSATION_TIMEOUT].due_at == NOW + CONFIG.step_timeout


@pytest.mark.parametrize(
    "step", [0, 1, 2], ids=["while paying", "while reserving", "while shipping"]
)
def test_cancellation_waits_for_the_step_then_undoes_it(step: int) -> None:
    run = run_to(step)
    requested = run.deliver(order_message(msg.OrderCancellationRequested))
    assert (requested.outcome, requested.to_state, requested.outgoing) == (
        Outcome.TRANSITIONED,
        STEPS[step],
        (),
    )
    assert run.timers.keys() == {STEP_TIMEOUT}  # the step in flight is still timed

    run.reply(SUCCESS[step])  # the step succeeded after all: it must be undone too
    confirm_all(run)

    assert run.state == S.CANCELLED
    assert run.command_types() == FORWARD[: step + 1] + UNDO[: step + 1][::-1]
    (cancelled,) = (o.message for o in run.events)
    assert cancelled == msg.OrderFailed(
        order_id=ORDER_ID, outcome="cancelled", reason="cancelled by customer"
    )
    assert run.timers == {}


@pytest.mark.parametrize(
    "step", [0, 1, 2], ids=["while paying", "while reserving", "while shipping"]
)
def test_cancellation_then_the_step_fails(step: int) -> None:
    run = run_to(step)
    run.deliver(order_message(msg.OrderCancellationRequested))
    run.reply(FAILURE[step])
    confirm_all(run)

    assert run.state == S.CANCELLED
    assert run.command_types() == FORWARD[: step + 1] + UNDO[:step][::-1]
    assert run.event_summaries() == ["OrderFailed(cancelled)"]


def test_cancellation_before_submission() -> None:
    run = SagaRun()
    started = run.deliver(order_message(msg.OrderCancellationRequested))
    assert (started.outcome, started.to_state, started.finished) == (
        Outcome.STARTED,
        S.CANCELLED,
        True,
    )
    assert run.events[0].message == msg.OrderFailed(
        order_id=ORDER_ID, outcome="cancelled", reason="changed my mind"
    )

    late = run.start()  # the order overtaken by its cancellation

    assert late.outcome == Outcome.FINISHED
    assert late.outgoing == ()
    assert run.commands == []  # nothing was ever charged


@pytest.mark.parametrize(
    "step", [0, 1, 2], ids=["payment times out", "inventory times out", "shipment times out"]
)
def test_step_timeout_undoes_the_timed_out_step_too(step: int) -> None:
    run = run_to(step)
    timed_out = run.fire(STEP_TIMEOUT)
    assert timed_out.to_state == S.COMPENSATING
    # The unanswered step may have happened: its undo runs first.
    assert run.outstanding_types() == [UNDO[step]]

    confirm_all(run)

    assert run.state == S.FAILED
    assert run.command_types() == FORWARD[: step + 1] + UNDO[: step + 1][::-1]
    (failed,) = (o.message for o in run.events)
    assert failed == msg.OrderFailed(order_id=ORDER_ID, outcome="failed", reason="step timed out")


@pytest.mark.parametrize("step", [0, 1, 2], ids=["payment", "inventory", "shipment"])
def test_reply_after_its_step_timed_out_is_stale(step: int) -> None:
    run = run_to(step)
    run.fire(STEP_TIMEOUT)
    before = run.snapshot

    late = run.reply(SUCCESS[step])

    assert late.outcome == Outcome.STALE
    assert run.snapshot == before


def test_unconfirmed_compensation_ends_in_compensation_failed() -> None:
    run = run_to(2)
    run.reply(msg.ShipmentFailed)  # -> ReleaseInventory, never confirmed

    stuck = run.fire(COMPENSATION_TIMEOUT)

    assert (stuck.to_state, stuck.finished, stuck.outgoing[0].kind) == (
        S.COMPENSATION_FAILED,
        True,
        "event",
    )
    (failed,) = (o.message for o in run.events)
    assert isinstance(failed, msg.OrderFailed)
    assert failed.outcome == "compensation_failed"
    assert "ReleaseInventory" in failed.reason
    # What is left to undo stays on record for the operator.
    assert [c.command_type for c in run.runtime.compensations] == UNDO[:2]
    assert run.runtime.outstanding == frozenset()
    assert run.timers == {}

    late = run.confirm_compensation()
    assert late.outcome == Outcome.FINISHED


@pytest.mark.parametrize("step", [0, 1, 2], ids=["paying", "reserving", "shipping"])
def test_duplicate_submission_is_ignored(step: int) -> None:
    run = run_to(step)
    before = run.snapshot
    assert run.start().outcome == Outcome.IGNORED
    assert run.snapshot == before


def test_compensating_saga_ignores_cancellation_and_forward_replies() -> None:
    run = run_to(1)
    run.reply(msg.InventoryReservationFailed)
    before = run.snapshot

    outcomes = [
        run.deliver(order_message(msg.OrderCancellationRequested)).outcome,
        run.reply(msg.InventoryReserved).outcome,  # its command is no longer awaited
        run.start().outcome,
    ]

    assert outcomes == [Outcome.IGNORED, Outcome.STALE, Outcome.IGNORED]
    assert run.snapshot == before
    confirm_all(run)
    assert run.event_summaries() == ["OrderFailed(failed)"]  # not cancelled: too late


def test_repeated_reply_is_stale_once_accepted() -> None:
    run = run_to(0)
    first = run.reply(msg.PaymentProcessed)
    payment = run.last_command(msg.ProcessPayment)
    assert payment is not None
    again = run.deliver(order_message(msg.PaymentProcessed), causation_id=payment.message_id)
    assert (first.outcome, again.outcome) == (Outcome.TRANSITIONED, Outcome.STALE)


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        pytest.param(lambda run: [run.reply(r) for r in SUCCESS], S.COMPLETED, id="completed"),
        pytest.param(lambda run: run.reply(msg.PaymentFailed), S.FAILED, id="failed"),
    ],
)
def test_finished_saga_records_and_ignores_everything(
    finish: Callable[[SagaRun], object], expected: S
) -> None:
    run = SagaRun()
    run.start()
    finish(run)
    assert run.state == expected
    before = run.snapshot

    outcomes = {
        run.start().outcome,
        run.deliver(order_message(msg.OrderCancellationRequested)).outcome,
        run.reply(msg.PaymentProcessed).outcome,
    }

    assert outcomes == {Outcome.FINISHED}
    assert run.snapshot == before


def test_longest_failure_reason_still_fits_the_published_event() -> None:
    run = run_to(0)
    reason = "x" * 200  # the contract's maximum
    run.reply(msg.PaymentFailed(order_id=ORDER_ID, reason=reason))
    (failed,) = (o.message for o in run.events)
    assert isinstance(failed, msg.OrderFailed)
    assert len(failed.reason) == 200
    assert failed.reason.startswith("payment failed: ")


# --- operator actions meet the order workflow (engine-level cases: test_engine_operator.py) ------


def _operator(
    action: Literal["abort", "compensate", "skip"], to_state: str | None = None
) -> OperatorRequest:
    return OperatorRequest(action, operator="ops@example", reason="stuck", to_state=to_state)


def test_operator_compensation_also_undoes_the_step_in_flight() -> None:
    run = run_to(0)
    try:
        run.operate(_operator("compensate"))
    except OperatorRefused:
        return  # refusing while the step is in flight is a fix too (it cannot be undone yet)
    confirm_all(run)
    run.reply(msg.PaymentProcessed)  # the payment worker charged the card after all

    assert "RefundPayment" in run.command_types()


def test_operator_skip_leaves_the_saga_waiting_for_something_real() -> None:
    run = run_to(0)
    try:
        skipped = run.operate(_operator("skip", to_state=S.AWAITING_INVENTORY.value))
    except OperatorRefused:
        return  # refusing to skip into a waiting state is a fix too

    assert skipped.finished or run.outstanding_types() == ["ReserveInventory"]
