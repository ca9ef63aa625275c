"""Pure planning of a batch of saga steps: decisions in, rows to write out. No I/O.

A batch may hold several messages for one saga; each is decided against the state the previous
one produced, so the batch behaves exactly like the same messages applied one by one. The
rows it plans are written by orchestrator/store/sql.py in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from opentelemetry import propagate, trace

from contracts.envelope import new_envelope
from contracts.topology import Topology
from orchestrator.engine import (
    Decision,
    EngineConfig,
    Incoming,
    Machine,
    Outcome,
    SagaSnapshot,
    decide,
)
from orchestrator.engine.model import timer_name
from orchestrator.engine.registry import Workflows
from orchestrator.store.json_text import json_text
from sagaline.messaging.errors import ReportableError

_tracer = trace.get_tracer("sagaline.orchestrator")

REFUSED_TIMER_DELAY = timedelta(minutes=1)


@dataclass
class SagaSlot:
    """One saga as the batch sees it: what the database held, and where the batch left it."""

    loaded: SagaSnapshot | None
    current: SagaSnapshot | None
    created_at: datetime | None = None

    @property
    def is_new(self) -> bool:
        return self.loaded is None and self.current is not None


@dataclass(frozen=True)
class Planned:
    incoming: Incoming
    decision: Decision
    saga_id: uuid.UUID
    workflow: str
    previous_update: datetime | None
    definition_version: int = 1
    """The version of the workflow whose machine decided the step."""


class OutboxMessage(NamedTuple):
    """One outbox row as a batch writes it. The intake publishes it from memory right after
    the commit (orchestrator/relay.py `dispatch`); the relay loop reads the same fields back
    from the table for rows nobody dispatched."""

    message_id: uuid.UUID
    saga_id: uuid.UUID
    exchange: str
    routing_key: str
    message_type: str
    body: bytes
    headers: dict[str, str]
    created_at: datetime


@dataclass
class Plan:
    now: datetime
    traced: bool = False
    """Whether each step opens a "saga transition" span (an SDK tracer provider is
    installed); looked up once per batch."""
    steps: list[Planned | ReportableError | None] = field(default_factory=list)
    """Per incoming, in order: a planned step, a refusal, or None for a duplicate delivery."""
    slots: dict[uuid.UUID, SagaSlot] = field(default_factory=dict)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    timers: dict[tuple[uuid.UUID, str], tuple[uuid.UUID, datetime] | None] = field(
        default_factory=dict
    )
    finished: set[uuid.UUID] = field(default_factory=set)
    inbox: list[tuple[uuid.UUID, uuid.UUID, str]] = field(default_factory=list)
    """(message id, saga id, trigger) of each message the batch applies. A refused message
    leaves no trace, so that a replay after a fix can process it."""

    def slot(self, saga_id: uuid.UUID) -> SagaSlot:
        return self.slots.setdefault(saga_id, SagaSlot(None, None))


def actor_of(incoming: Incoming) -> str:
    if incoming.operator is not None:
        return f"operator:{incoming.operator.operator}"
    return "timer" if incoming.payload is None else "message"


def plan_batch(
    incomings: list[Incoming],
    fresh: list[bool],
    loaded: Mapping[uuid.UUID, SagaSnapshot],
    owners: Mapping[tuple[str, str], uuid.UUID],
    topology: Topology,
    config: EngineConfig,
    now: datetime,
    trace_headers: list[Mapping[str, str]],
    actors: list[str],
    workflows: Workflows,
) -> Plan:
    """Decide every fresh incoming in order and collect the rows the batch must write.

    `owners` maps (workflow, business key) to the saga that already holds it in the database.
    """
    plan = Plan(now=now, traced=_tracing())
    for saga_id, snapshot in loaded.items():
        plan.slots[saga_id] = SagaSlot(snapshot, snapshot)
    keys = {(s.workflow, s.business_key): s.saga_id for s in loaded.values()} | dict(owners)
    for incoming, is_fresh, headers, actor in zip(
        incomings, fresh, trace_headers, actors, strict=True
    ):
        if not is_fresh:
            plan.steps.append(None)
            continue
        try:
            machine = workflows.machine_for(incoming, plan.slot(incoming.saga_id).current)
            step = _plan_one(plan, machine, incoming, keys, topology, config, headers, actor)
        except ReportableError as refusal:
            plan.steps.append(refusal)
            _put_back_if_timer(plan, incoming)
            continue
        plan.steps.append(step)
        plan.inbox.append((incoming.message_id, incoming.saga_id, incoming.trigger))
    return plan


def _put_back_if_timer(plan: Plan, incoming: Incoming) -> None:
    """A refused timer (its saga's version is not loaded) was claimed from the table: set it
    again, due a little later, so it fires once the version is back or the saga migrated."""
    name = timer_name(incoming.trigger)
    if name is not None and incoming.payload is None and incoming.operator is None:
        plan.timers[(incoming.saga_id, name)] = (
            incoming.message_id,
            plan.now + REFUSED_TIMER_DELAY,
        )


def _plan_one(
    plan: Plan,
    machine: Machine[Any, Any],
    incoming: Incoming,
    keys: dict[tuple[str, str], uuid.UUID],
    topology: Topology,
    config: EngineConfig,
    headers: Mapping[str, str],
    actor: str,
) -> Planned:
    if not plan.traced:
        decision, saga_id = _decide(plan, machine, incoming, keys, config)
        carrier = _untraced_carrier(headers)
    else:
        parent = propagate.extract(dict(headers))
        with _tracer.start_as_current_span(
            "saga transition", context=parent, attributes={"saga.id": str(incoming.saga_id)}
        ) as span:
            decision, saga_id = _decide(plan, machine, incoming, keys, config)
            span.set_attributes(
                {
                    "saga.workflow": machine.name,
                    "saga.outcome": decision.outcome.value,
                    "saga.from_state": decision.from_state or "",
                    "saga.to_state": decision.to_state,
                    "messaging.message.type": incoming.trigger,
                }
            )
            carrier = dict(headers)
            propagate.inject(carrier)
    target = plan.slots[saga_id]
    previous = target.current.updated_at if target.current else None
    if decision.changes_saga:
        target.current = _advance(target.current, saga_id, machine, decision, plan.now)
        _collect_effects(plan, saga_id, incoming, decision, carrier, topology)
    plan.history.append(_history_row(saga_id, incoming, decision, actor, plan.now))
    return Planned(incoming, decision, saga_id, machine.name, previous, machine.version)


def _decide(
    plan: Plan,
    machine: Machine[Any, Any],
    incoming: Incoming,
    keys: dict[tuple[str, str], uuid.UUID],
    config: EngineConfig,
) -> tuple[Decision, uuid.UUID]:
    """The step's decision, and the saga it applies to (the owner of the business key, when
    a second saga tries to start for it)."""
    slot = plan.slot(incoming.saga_id)
    decision = decide(machine, slot.current, incoming, plan.now, config)
    if decision.outcome is not Outcome.STARTED:
        return decision, incoming.saga_id
    owner = keys.get((machine.name, decision.business_key))
    if owner is not None and owner != incoming.saga_id:
        return _duplicate_start(plan.slots[owner].current, incoming, owner), owner
    keys[(machine.name, decision.business_key)] = incoming.saga_id
    slot.created_at = plan.now
    return decision, incoming.saga_id


def _tracing() -> bool:
    """Whether an SDK tracer provider is installed (sagaline.telemetry, or a test's)."""
    return not isinstance(
        trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    )


def _untraced_carrier(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace headers a step's messages carry when tracing is off: what the no-op span's
    inject would write (the caller's trace context passed on), without opening the span,
    which cost a tenth of planning a step."""
    if not headers:
        return {}
    carrier = dict(headers)
    propagate.inject(carrier, context=propagate.extract(carrier))
    return carrier


def _duplicate_start(
    owner: SagaSnapshot | None, incoming: Incoming, owner_id: uuid.UUID
) -> Decision:
    assert owner is not None
    return Decision(
        outcome=Outcome.DUPLICATE_START,
        from_state=owner.state,
        to_state=owner.state,
        data=owner.data,
        runtime=owner.runtime,
        finished=owner.finished,
        note=f"business key already started by saga {owner_id}; correlation id {incoming.saga_id}",
        business_key=owner.business_key,
        version=owner.version,
    )


def _advance(
    current: SagaSnapshot | None,
    saga_id: uuid.UUID,
    machine: Machine[Any, Any],
    decision: Decision,
    now: datetime,
) -> SagaSnapshot:
    # A new saga runs under the version that started it; an existing one keeps its own.
    base = current or SagaSnapshot(
        saga_id=saga_id,
        workflow=machine.name,
        definition_version=machine.version,
        business_key=decision.business_key,
        state=decision.to_state,
        data={},
        runtime=decision.runtime,
        version=0,
        finished=False,
    )
    return replace(
        base,
        state=decision.to_state,
        data=decision.data,
        runtime=decision.runtime,
        version=decision.version,
        finished=decision.finished,
        updated_at=now,
    )


def _collect_effects(
    plan: Plan,
    saga_id: uuid.UUID,
    incoming: Incoming,
    decision: Decision,
    headers: dict[str, str],
    topology: Topology,
) -> None:
    for item in decision.outgoing:
        envelope = new_envelope(
            item.message,
            correlation_id=saga_id,
            causation_id=incoming.message_id,
            message_id=item.message_id,
            occurred_at=plan.now,
        )
        exchange = (
            topology.commands_exchange if item.kind == "command" else topology.events_exchange
        )
        plan.outbox.append(
            OutboxMessage(
                item.message_id,
                saga_id,
                exchange,
                item.message.message_type,
                item.message.message_type,
                envelope.to_json(),
                headers,
                plan.now,
            )
        )
    if decision.finished:
        plan.finished.add(saga_id)
        for key in [k for k in plan.timers if k[0] == saga_id]:
            del plan.timers[key]
        return
    for change in decision.timers:
        key = (saga_id, change.name)
        if change.due_at is None or change.message_id is None:
            plan.timers[key] = None
        else:
            plan.timers[key] = (change.message_id, change.due_at)


def _history_row(
    saga_id: uuid.UUID, incoming: Incoming, decision: Decision, actor: str, now: datetime
) -> tuple[Any, ...]:
    commands = [
        {"type": o.message.message_type, "message_id": str(o.message_id), "kind": o.kind}
        for o in decision.outgoing
    ]
    return (
        saga_id,
        decision.version,
        now,
        incoming.message_id,
        incoming.trigger,
        decision.outcome.value,
        decision.from_state,
        decision.to_state,
        json_text(commands),
        actor,
        decision.note,
    )


ActorOf = Callable[[Incoming], str]
