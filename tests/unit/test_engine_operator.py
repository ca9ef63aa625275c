"""Operator actions (abort, compensate, skip) as the engine decides them; pure, no I/O."""

from __future__ import annotations

import pytest

from contracts import order as msg
from orchestrator.engine import Incoming, OperatorRefused, OperatorRequest, Outcome, decide
from orchestrator.workflows.order import OrderState as S
from orchestrator.workflows.order import machine
from tests.unit.decider_support import (
    CONFIG,
    NOW,
    SAGA_ID,
    order_snapshot,
)

REFUND, RELEASE = "RefundPayment", "ReleaseInventory"


def _operator(action: str, to_state: str | None = None) -> Incoming:
    request = OperatorRequest(action=action, operator="ops-anna", reason="stuck", to_state=to_state)  # type: ignore[arg-type]
    return Incoming.from_operator(SAGA_ID, request)


@pytest.mark.parametrize(
    ("state", "stack"),
    [
        (S.AWAITING_PAYMENT, ()),
        (S.AWAITING_INVENTORY, (REFUND,)),
        (S.AWAITING_SHIPMENT, (REFUND, RELEASE)),
        (S.COMPENSATING, (REFUND,)),
    ],
)
def test_abort_ends_any_unfinished_saga_without_compensating(
    state: S, stack: tuple[str, ...]
) -> None:
    decision = decide(machine, order_snapshot(state, stack=stack), _operator("abort"), NOW, CONFIG)

    assert (decision.outcome, decision.to_state, decision.finished) == (
        Outcome.TRANSITIONED,
        S.ABORTED,
        True,
    )
    assert decision.runtime.outstanding == frozenset()
    assert [o.message.message_type for o in decision.outgoing] == ["OrderFailed"]
    failed = decision.outgoing[0].message
    assert isinstance(failed, msg.OrderFailed)
    assert failed.outcome == "aborted"
    assert "abort by ops-anna: stuck" in decision.note
    assert (S(decision.from_state or ""), "operator:abort", S.ABORTED) in {
        (S(a or ""), b, S(c)) for a, b, c in machine.edges() if a
    }


def test_compensate_runs_the_stack_newest_first_when_nothing_is_in_flight() -> None:
    before = order_snapshot(S.AWAITING_SHIPMENT, stack=(REFUND, RELEASE), outstanding=())
    decision = decide(machine, before, _operator("compensate"), NOW, CONFIG)

    assert decision.to_state == S.COMPENSATING
    assert [o.message.message_type for o in decision.outgoing] == [RELEASE]
    assert decision.runtime.outstanding == frozenset({decision.outgoing[0].message_id})
    assert decision.runtime.compensation_target == S.FAILED


def test_compensate_with_nothing_done_fails_at_once() -> None:
    decision = decide(
        machine,
        order_snapshot(S.AWAITING_PAYMENT, outstanding=()),
        _operator("compensate"),
        NOW,
        CONFIG,
    )
    assert (decision.to_state, decision.finished) == (S.FAILED, True)


def test_skip_in_compensation_counts_the_compensation_in_flight_as_confirmed() -> None:
    before = order_snapshot(S.COMPENSATING, stack=(REFUND, RELEASE), compensation_target=S.FAILED)
    decision = decide(machine, before, _operator("skip"), NOW, CONFIG)

    assert decision.to_state == S.COMPENSATING
    assert [o.message.message_type for o in decision.outgoing] == [REFUND]
    assert [c.command_type for c in decision.runtime.compensations] == [REFUND]


def test_skip_forward_moves_to_a_declared_target() -> None:
    before = order_snapshot(S.AWAITING_SHIPMENT, stack=(REFUND, RELEASE))
    decision = decide(machine, before, _operator("skip", to_state="completed"), NOW, CONFIG)

    assert (decision.to_state, decision.finished) == (S.COMPLETED, True)
    assert [o.message.message_type for o in decision.outgoing] == ["OrderCompleted"]


@pytest.mark.parametrize(
    ("state", "action", "to_state", "message"),
    [
        (S.COMPLETED, "abort", None, "already completed"),
        (S.FAILED, "skip", None, "already failed"),
        (S.COMPENSATING, "compensate", None, "already compensating"),
        (S.AWAITING_PAYMENT, "skip", None, "needs --to one of: cancelled, failed"),
        (S.AWAITING_PAYMENT, "skip", "awaiting_inventory", "needs --to one of"),
        (S.AWAITING_SHIPMENT, "compensate", None, "still in flight"),
        (S.AWAITING_PAYMENT, "skip", "completed", "needs --to one of"),
    ],
)
def test_operator_actions_that_do_not_apply_are_refused(
    state: S, action: str, to_state: str | None, message: str
) -> None:
    with pytest.raises(OperatorRefused, match=message):
        decide(machine, order_snapshot(state), _operator(action, to_state), NOW, CONFIG)
