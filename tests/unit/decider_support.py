"""Helpers for pure decider tests: canonical order messages, snapshots, and a saga driver.

`SagaRun` feeds messages to `decide` one at a time and applies each decision to its snapshot the
way the store would (only STARTED/TRANSITIONED change the saga). A worker's reply gets the id of
the command it answers as causation id, so multi-step paths read like the conversation they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from contracts import order as msg
from contracts.base import Command, Event, Message, ReplyEvent
from orchestrator.engine import (
    CompensationEntry,
    Decision,
    EngineConfig,
    Incoming,
    Machine,
    OperatorRequest,
    Outgoing,
    RuntimeState,
    SagaSnapshot,
    StepContext,
    TimerChange,
    decide,
)
from orchestrator.workflows.order import OrderData, OrderState
from orchestrator.workflows.order import machine as order_machine

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
CONFIG = EngineConfig(step_timeout=timedelta(seconds=90))
SAGA_ID = uuid.UUID("5a6a0000-0000-4000-8000-000000000001")
AWAITED = uuid.UUID("a11a0000-0000-4000-8000-00000000000a")
"""The id of the command a hand-built snapshot waits for (its reply's causation id)."""
OTHER = uuid.UUID("0be40000-0000-4000-8000-00000000000b")
"""A command id no hand-built snapshot waits for (replies citing it are stale)."""

ORDER_ID = "order-1"
CARD_TOKEN = "tok_visa_4242"
LINES = (msg.OrderLine(sku="sku-1", quantity=2),)
SHIP_TO = msg.Address(country="DE", postcode="10115", city="Berlin")

STEP_TIMEOUT = "step-timeout"
COMPENSATION_TIMEOUT = "compensation-step"

# --- messages ------------------------------------------------------------------------------------

_FACTORIES: dict[type[Message], Callable[[], Message]] = {
    msg.OrderSubmitted: lambda: msg.OrderSubmitted(
        order_id=ORDER_ID,
        customer_id="cust-1",
        amount_cents=12_345,
        currency="EUR",
        card_token=CARD_TOKEN,
        lines=LINES,
        ship_to=SHIP_TO,
    ),
    msg.OrderCancellationRequested: lambda: msg.OrderCancellationRequested(
        order_id=ORDER_ID, reason="changed my mind"
    ),
    msg.PaymentProcessed: lambda: msg.PaymentProcessed(
        order_id=ORDER_ID, payment_id="pay-1", amount_cents=12_345
    ),
    msg.PaymentFailed: lambda: msg.PaymentFailed(order_id=ORDER_ID, reason="card declined"),
    msg.PaymentRefunded: lambda: msg.PaymentRefunded(order_id=ORDER_ID, amount_cents=12_345),
    msg.InventoryReserved: lambda: msg.InventoryReserved(order_id=ORDER_ID),
    msg.InventoryReservationFailed: lambda: msg.InventoryReservationFailed(
        order_id=ORDER_ID, reason="out of stock"
    ),
    msg.InventoryReleased: lambda: msg.InventoryReleased(order_id=ORDER_ID),
    msg.OrderShipped: lambda: msg.OrderShipped(order_id=ORDER_ID, tracking_number="trk-1"),
    msg.ShipmentFailed: lambda: msg.ShipmentFailed(order_id=ORDER_ID, reason="no courier"),
    msg.ShipmentCancelled: lambda: msg.ShipmentCancelled(order_id=ORDER_ID),
}


def order_message(kind: type[Message]) -> Message:
    """A valid instance of an order event with canonical field values."""
    return _FACTORIES[kind]()


REPLY_TO: dict[type[ReplyEvent], type[Command]] = {
    msg.PaymentProcessed: msg.ProcessPayment,
    msg.PaymentFailed: msg.ProcessPayment,
    msg.InventoryReserved: msg.ReserveInventory,
    msg.InventoryReservationFailed: msg.ReserveInventory,
    msg.OrderShipped: msg.CreateShipment,
    msg.ShipmentFailed: msg.CreateShipment,
    msg.PaymentRefunded: msg.RefundPayment,
    msg.InventoryReleased: msg.ReleaseInventory,
    msg.ShipmentCancelled: msg.CancelShipment,
}
"""Which command each reply answers."""

# --- hand-built snapshots ------------------------------------------------------------------------


def compensation_entry(
    command_type: str, machine: Machine[Any, Any] = order_machine
) -> CompensationEntry:
    return CompensationEntry(
        command_type, {"order_id": ORDER_ID}, machine.compensations[command_type]
    )


def order_snapshot(
    state: OrderState,
    *,
    cancel: bool = False,
    stack: Iterable[str] = (),
    outstanding: Iterable[uuid.UUID] = (AWAITED,),
    compensation_target: OrderState | None = None,
    reason: str | None = None,
    version: int = 5,
) -> SagaSnapshot:
    """An order saga in `state`, with its data filled in as far as that state implies."""
    finished = state in (
        OrderState.COMPLETED,
        OrderState.FAILED,
        OrderState.CANCELLED,
        OrderState.COMPENSATION_FAILED,
    )
    data = OrderData(
        order_id=ORDER_ID,
        customer_id="cust-1",
        amount_cents=12_345,
        currency="EUR",
        lines=LINES,
        ship_to=SHIP_TO,
        payment_id=None if state is OrderState.AWAITING_PAYMENT else "pay-1",
        tracking_number="trk-1" if state is OrderState.COMPLETED else None,
        cancel_requested=cancel,
    )
    return SagaSnapshot(
        saga_id=SAGA_ID,
        workflow=order_machine.name,
        business_key=ORDER_ID,
        state=state.value,
        data=data.model_dump(mode="json"),
        runtime=RuntimeState(
            outstanding=frozenset() if finished else frozenset(outstanding),
            compensations=tuple(compensation_entry(c) for c in stack),
            compensation_target=None if compensation_target is None else compensation_target.value,
            reason=reason,
        ),
        version=version,
        finished=finished,
    )


def incoming_message(
    message: Message, *, causation_id: uuid.UUID | None = None, saga_id: uuid.UUID = SAGA_ID
) -> Incoming:
    return Incoming(
        message_id=uuid.uuid5(saga_id, f"incoming:{message.message_type}:{causation_id}"),
        saga_id=saga_id,
        trigger=message.message_type,
        payload=message,
        causation_id=causation_id,
    )


def incoming_timer(name: str, *, saga_id: uuid.UUID = SAGA_ID) -> Incoming:
    return Incoming.timer(saga_id, name, uuid.uuid5(saga_id, f"timer:{name}"))


def incoming_operator(request: OperatorRequest, *, saga_id: uuid.UUID = SAGA_ID) -> Incoming:
    return Incoming.from_operator(saga_id, request)


# --- reading decisions ---------------------------------------------------------------------------


def sent_commands(decision: Decision) -> list[str]:
    return [o.message.message_type for o in decision.outgoing if o.kind == "command"]


def describe_event(out: Outgoing) -> str:
    """`OrderCompleted`, or `OrderFailed(<outcome>)`: what a table row expects to be published."""
    if isinstance(out.message, msg.OrderFailed):
        return f"OrderFailed({out.message.outcome})"
    return out.message.message_type


def published(decision: Decision) -> list[str]:
    return [describe_event(o) for o in decision.outgoing if o.kind == "event"]


def timer_changes(decision: Decision) -> set[str]:
    return {f"{'set' if t.due_at else 'cancel'} {t.name}" for t in decision.timers}


def stack_of(runtime: RuntimeState) -> list[str]:
    """Compensation command types, bottom of the stack first (the last one runs first)."""
    return [c.command_type for c in runtime.compensations]


def snapshot_after(
    before: SagaSnapshot | None, decision: Decision, machine: Machine[Any, Any], saga_id: uuid.UUID
) -> SagaSnapshot:
    """The snapshot the store would hold after applying a changing decision."""
    assert decision.changes_saga
    return SagaSnapshot(
        saga_id=saga_id,
        workflow=machine.name,
        business_key=decision.business_key if before is None else before.business_key,
        state=decision.to_state,
        data=decision.data,
        runtime=decision.runtime,
        version=decision.version,
        finished=decision.finished,
    )


# --- the driver ----------------------------------------------------------------------------------


@dataclass
class SagaRun:
    """One saga's life, one decision at a time, with what it sent and which timers are live."""

    machine: Machine[Any, Any] = order_machine
    saga_id: uuid.UUID = SAGA_ID
    now: datetime = NOW
    config: EngineConfig = CONFIG
    snapshot: SagaSnapshot | None = None
    decisions: list[Decision] = field(default_factory=list)
    commands: list[Outgoing] = field(default_factory=list)
    events: list[Outgoing] = field(default_factory=list)
    timers: dict[str, TimerChange] = field(default_factory=dict)
    inputs: list[tuple[SagaSnapshot | None, Incoming, datetime]] = field(default_factory=list)
    """What each decision was made from, to re-decide it."""
    _received: int = 0

    # --- feeding ---

    def feed(self, incoming: Incoming, now: datetime | None = None) -> Decision:
        at = now or self.now
        self.inputs.append((self.snapshot, incoming, at))
        decision = decide(self.machine, self.snapshot, incoming, at, self.config)
        self.decisions.append(decision)
        if decision.changes_saga:
            self.snapshot = snapshot_after(self.snapshot, decision, self.machine, self.saga_id)
            for out in decision.outgoing:
                (self.commands if out.kind == "command" else self.events).append(out)
            for change in decision.timers:
                if change.due_at is None:
                    self.timers.pop(change.name, None)
                else:
                    self.timers[change.name] = change
            if decision.finished:
                self.timers.clear()  # as the store does: a finished saga keeps no timer
        return decision

    def deliver(self, message: Message, causation_id: uuid.UUID | None = None) -> Decision:
        self._received += 1
        incoming = Incoming(
            message_id=uuid.uuid5(self.saga_id, f"received:{self._received}"),
            saga_id=self.saga_id,
            trigger=message.message_type,
            payload=message,
            causation_id=causation_id,
        )
        return self.feed(incoming)

    def start(self, message: Message | None = None) -> Decision:
        return self.deliver(message or order_message(msg.OrderSubmitted))

    def reply(self, message: ReplyEvent | type[ReplyEvent]) -> Decision:
        """A worker's answer to the latest command of the type it answers."""
        reply = order_message(message) if isinstance(message, type) else message
        assert isinstance(reply, ReplyEvent)
        answered = REPLY_TO[type(reply)]
        command = self.last_command(answered)
        assert command is not None, f"no {answered.message_type} was sent"
        return self.deliver(reply, causation_id=command.message_id)

    def confirm_compensation(self) -> Decision:
        """The reply confirming the compensation the saga waits for."""
        assert self.snapshot is not None and self.snapshot.runtime.compensations
        top = self.snapshot.runtime.compensations[-1]
        reply = next(r for r in REPLY_TO if r.message_type == top.confirmed_by)
        return self.reply(reply)

    def operate(self, request: OperatorRequest) -> Decision:
        return self.feed(incoming_operator(request, saga_id=self.saga_id))

    def fire(self, name: str) -> Decision:
        """A live timer comes due: it fires once, at its due time."""
        change = self.timers.pop(name)
        assert change.due_at is not None and change.message_id is not None
        return self.feed(Incoming.timer(self.saga_id, name, change.message_id), change.due_at)

    # --- reading ---

    @property
    def state(self) -> str | None:
        return None if self.snapshot is None else self.snapshot.state

    @property
    def runtime(self) -> RuntimeState:
        assert self.snapshot is not None
        return self.snapshot.runtime

    def last_command(self, kind: type[Command]) -> Outgoing | None:
        return next((o for o in reversed(self.commands) if isinstance(o.message, kind)), None)

    def command_types(self) -> list[str]:
        return [o.message.message_type for o in self.commands]

    def event_summaries(self) -> list[str]:
        return [describe_event(o) for o in self.events]

    def outstanding_types(self) -> list[str]:
        by_id = {o.message_id: o.message.message_type for o in self.commands}
        return sorted(by_id[m] for m in self.runtime.outstanding)


# --- a toy workflow for engine tests -------------------------------------------------------------
# Its own events and commands; the compensation reuses a real contract command because the
# engine rebuilds compensation commands through the contract registry.


class Toy(StrEnum):
    WORKING = "working"
    COMPENSATING = "compensating"
    DONE = "done"
    FAILED = "failed"
    BROKEN = "broken"
    ABORTED = "aborted"


class ToyData(BaseModel):
    job_id: str


class ToyStarted(Event):
    job_id: str


class ToyPoked(Event):
    job_id: str


class ToyDone(ReplyEvent):
    job_id: str


class ToyRejected(ReplyEvent):
    job_id: str


class ToyWork(Command):
    job_id: str


ToyCtx = StepContext[Toy, ToyData]


def _send_work(ctx: ToyCtx, event: ToyStarted) -> None:
    ctx.send(ToyWork(job_id=event.job_id))


def _rejected(ctx: ToyCtx, _: ToyRejected) -> None:
    ctx.push_compensation(msg.RefundPayment(order_id=ctx.data.job_id))
    ctx.compensate(then=Toy.FAILED, reason="rejected")


def toy(
    states: type[StrEnum] = Toy,
    *,
    ignore_duplicate_start: bool = True,
) -> Machine[Any, ToyData]:
    """A small valid workflow: start -> working -> done, or compensate -> failed."""
    st: Any = states  # Toy, or a variant with the same members and more
    machine: Machine[Any, ToyData] = Machine(
        "toy",
        states=st,
        data=ToyData,
        final=[st("done"), st("failed")],
        compensating=st("compensating"),
        compensation_failed=st("broken"),
        aborted=st("aborted"),
    )
    machine.compensation(msg.RefundPayment, confirmed_by=msg.PaymentRefunded)
    machine.compensates_to(st("failed"))
    machine.start(
        ToyStarted,
        key=lambda e: e.job_id,
        init=lambda e: ToyData(job_id=e.job_id),
        to=st("working"),
        do=_send_work,
    )
    machine.on(st("working"), ToyDone, to=st("done"))
    machine.on(st("working"), ToyRejected, to=st("compensating"), do=_rejected)
    if ignore_duplicate_start:
        machine.ignore(st("working"), ToyStarted, why="duplicate")
    return machine
