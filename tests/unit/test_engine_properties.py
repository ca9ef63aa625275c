"""Property tests: whatever order replies, cancellations and timers arrive in, the saga stays sane.

Replies cite the latest command of the type they answer, or a command never sent (then they are
stale). Timers fire only while set, at their due time. After every decision the invariants hold:
  - a saga waits for exactly one command: a forward one in a forward state, the top
    compensation while compensating (never both), and the matching timer is set;
  - a finished saga waits for nothing, has no timer left, and published exactly one outcome;
  - the compensation stack only holds undos of steps whose success was accepted, or that timed out,
    and a failed or cancelled saga sent each of those undos exactly once, newest first;
  - the awaited command's timer was set by the decision that sent it;
  - no message id is ever emitted twice.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import order as msg
from orchestrator.engine import Decision, Outcome
from orchestrator.workflows.order import OrderState as S
from orchestrator.workflows.order import machine
from tests.unit.decider_support import (
    COMPENSATION_TIMEOUT,
    REPLY_TO,
    STEP_TIMEOUT,
    SagaRun,
    describe_event,
    order_message,
)

CANCEL = "cancel"
SUBMIT_AGAIN = "submit again"
STALE = "stale"
FORWARD_STATES = {s.value for s in machine.active_states}
UNDO_OF_SUCCESS = {
    msg.PaymentProcessed.message_type: "RefundPayment",
    msg.InventoryReserved.message_type: "ReleaseInventory",
    msg.OrderShipped.message_type: "CancelShipment",
}
UNDO_OF_TIMEOUT = {
    S.AWAITING_PAYMENT.value: "RefundPayment",
    S.AWAITING_INVENTORY.value: "ReleaseInventory",
    S.AWAITING_SHIPMENT.value: "CancelShipment",
}


class Watched(SagaRun):
    """A SagaRun that checks the invariants after every decision."""

    def __init__(self) -> None:
        super().__init__()
        self.undoable: list[str] = []
        """Undos of accepted (or timed-out) steps, in the order the steps were accepted."""
        self.saw_outcome: list[str] = []
        self.sent_in: dict[uuid.UUID, int] = {}
        self.timer_set_in: dict[str, int] = {}

    def feed(self, incoming: Any, now: Any = None) -> Decision:
        before = self.state
        decision = super().feed(incoming, now)
        step = len(self.decisions)
        if decision.outcome == Outcome.TRANSITIONED:
            if incoming.trigger in UNDO_OF_SUCCESS:
                self.undoable.append(UNDO_OF_SUCCESS[incoming.trigger])
            if incoming.trigger == f"timer:{STEP_TIMEOUT}" and before in FORWARD_STATES:
                self.undoable.append(UNDO_OF_TIMEOUT[before])
        if decision.changes_saga:
            self.saw_outcome += [
                describe_event(o)
                for o in decision.outgoing
                if isinstance(o.message, msg.OrderCompleted | msg.OrderFailed)
            ]
            self.sent_in.update({o.message_id: step for o in decision.outgoing})
            self.timer_set_in.update({t.name: step for t in decision.timers if t.due_at})
        self.check()
        return decision

    def check(self) -> None:
        assert self.snapshot is not None
        state, runtime = self.snapshot.state, self.snapshot.runtime
        by_id = {o.message_id: o.message.message_type for o in self.commands}
        waiting_for = [by_id[m] for m in runtime.outstanding]
        stack = [c.command_type for c in runtime.compensations]

        if state in machine.final:
            assert self.snapshot.finished
            assert waiting_for == []
            assert self.timers == {}
            expected = "OrderCompleted" if state == S.COMPLETED else f"OrderFailed({state})"
            assert self.saw_outcome == [expected]
        else:
            assert not self.snapshot.finished
            assert self.saw_outcome == []
            assert len(waiting_for) == 1
            # The awaited command is timed from when it was sent, not from an earlier step.
            (awaited,) = runtime.outstanding
            (timer,) = self.timers
            assert self.timer_set_in[timer] == self.sent_in[awaited]
            if state == S.COMPENSATING:
                assert waiting_for == stack[-1:]
                assert self.timers.keys() == {COMPENSATION_TIMEOUT}
            else:
                assert waiting_for[0] not in machine.compensations  # a forward command
                assert self.timers.keys() == {STEP_TIMEOUT}

        assert len(stack) == len(set(stack))
        assert set(stack) <= set(self.undoable)
        if state in (S.FAILED, S.CANCELLED):
            # Everything done was undone, newest first, each confirmed before the next.
            assert stack == []
            undone = [c for c in self.command_types() if c in machine.compensations]
            assert undone == self.undoable[::-1]
        if state == S.COMPLETED:
            assert not any(c in machine.compensations for c in self.command_types())
        emitted = [o.message_id for o in self.commands + self.events]
        assert len(emitted) == len(set(emitted))

    def apply(self, item: Any) -> Decision | None:
        if item == CANCEL:
            return self.deliver(order_message(msg.OrderCancellationRequested))
        if item == SUBMIT_AGAIN:
            return self.start()
        if item in (STEP_TIMEOUT, COMPENSATION_TIMEOUT):
            return self.fire(item) if item in self.timers else None
        if isinstance(item, tuple):  # (STALE, reply): a reply citing a command never sent
            return self.deliver(order_message(item[1]), causation_id=uuid.uuid4())
        assert isinstance(item, type)
        command = self.last_command(REPLY_TO[item])
        if command is None:
            return self.deliver(order_message(item), causation_id=uuid.uuid4())
        return self.reply(item)

    def drain(self) -> None:
        """Let every worker confirm and every timer fire until the saga ends."""
        for _ in range(10):
            if self.state in machine.final:
                return
            if self.state == S.COMPENSATING:
                self.confirm_compensation()
            else:
                self.fire(STEP_TIMEOUT)
        raise AssertionError(f"saga did not finish: {self.state}")


FORWARD_SUCCESS = [msg.PaymentProcessed, msg.InventoryReserved, msg.OrderShipped]


@settings(max_examples=100, deadline=None)
@given(st.permutations([*FORWARD_SUCCESS, CANCEL]))
def test_any_order_of_forward_replies_and_a_cancellation(order: list[Any]) -> None:
    run = Watched()
    run.start()
    for item in order:
        run.apply(item)
    assert run.state in FORWARD_STATES | machine.final | {S.COMPENSATING}

    cancel_at = order.index(CANCEL)
    in_order = [i for i in order if i != CANCEL] == FORWARD_SUCCESS
    if in_order and cancel_at == 3:
        assert run.state == S.COMPLETED  # the cancellation came too late
    run.drain()
    assert run.state in (S.COMPLETED, S.CANCELLED, S.FAILED)
    if run.state == S.CANCELLED:
        # Money taken is given back: the refund went out iff the payment was accepted.
        assert ("RefundPayment" in run.command_types()) == ("RefundPayment" in run.undoable)
        assert run.command_types().count("RefundPayment") <= 1


ANY_INPUT = st.sampled_from(
    [
        *REPLY_TO,
        CANCEL,
        SUBMIT_AGAIN,
        STEP_TIMEOUT,
        COMPENSATION_TIMEOUT,
        *((STALE, r) for r in REPLY_TO),
    ]
)


@st.composite
def conversations(draw: st.DrawFn) -> list[Any]:
    """Any inputs, with the forward replies (a prefix, in order) and maybe a cancel mixed in."""
    inputs = draw(st.lists(ANY_INPUT, max_size=10))
    spine: list[Any] = FORWARD_SUCCESS[: draw(st.integers(0, 3))]
    if draw(st.booleans()):
        spine.insert(draw(st.integers(0, len(spine))), CANCEL)
    start = 0
    for reply in spine:
        at = draw(st.integers(start, len(inputs)))
        inputs.insert(at, reply)
        start = at + 1
    return inputs


@settings(max_examples=300, deadline=None)
@given(conversations())
def test_any_sequence_of_inputs_keeps_the_invariants(inputs: list[Any]) -> None:
    run = Watched()
    run.start()
    for item in inputs:
        run.apply(item)
    run.drain()
    assert run.state in machine.final
