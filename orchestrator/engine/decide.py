"""The pure decide step: (saga snapshot, incoming message, now) -> Decision.

Order of checks matters and is the engine's contract:
1. no saga: a starting event creates one; anything else is an unknown saga (parked);
2. finished saga: recorded and ignored;
3. a reply to a command the saga no longer waits for: stale, recorded and ignored;
4. compensating: compensation confirmations advance the LIFO stack; everything else is ignored;
5. otherwise the state's transition runs, or its explicit ignore applies; a transition's action
   may still find from the saga's data that the message changes nothing (`ctx.ignore`).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel

from contracts.registry import message_class
from orchestrator.engine.context import ActionError, StepContext
from orchestrator.engine.machine import COMPENSATION_TIMER, Ignore, Machine, Transition
from orchestrator.engine.model import (
    Decision,
    EngineConfig,
    Incoming,
    OperatorRefused,
    OperatorRequest,
    Outcome,
    Outgoing,
    RuntimeState,
    SagaSnapshot,
    TimerChange,
    UnknownSaga,
    WrongWorkflow,
    is_operator,
)

S = TypeVar("S", bound=StrEnum)
D = TypeVar("D", bound=BaseModel)


def decide(
    machine: Machine[S, D],
    snapshot: SagaSnapshot | None,
    incoming: Incoming,
    now: datetime,
    config: EngineConfig,
) -> Decision:
    if snapshot is None:
        return _start(machine, incoming, now, config)
    if snapshot.workflow != machine.name:
        raise WrongWorkflow(f"saga belongs to workflow {snapshot.workflow}, not {machine.name}")
    if incoming.operator is not None:
        return _operator_step(machine, snapshot, incoming.operator, now, config)
    if snapshot.finished or snapshot.state in machine.final:
        return _unchanged(snapshot, Outcome.FINISHED, f"saga already {snapshot.state}")
    if incoming.is_reply and incoming.causation_id not in snapshot.runtime.outstanding:
        return _unchanged(snapshot, Outcome.STALE, "reply to a command no longer awaited")
    if snapshot.state == machine.compensating:
        return _compensation_step(machine, snapshot, incoming, now, config)
    handling = machine.handling(snapshot.state, incoming.trigger)
    if handling is None:
        if incoming.trigger in machine.starts:
            return _unchanged(snapshot, Outcome.DUPLICATE_START, "saga already started")
        return _unchanged(snapshot, Outcome.IGNORED, f"not handled in {snapshot.state}")
    if isinstance(handling, Ignore):
        return _unchanged(snapshot, Outcome.IGNORED, handling.why)
    runtime = snapshot.runtime
    if incoming.is_reply and incoming.causation_id is not None:
        runtime = _replace(runtime, outstanding=runtime.outstanding - {incoming.causation_id})
    ctx = _context(machine, snapshot, now, config)
    ctx.reason = runtime.reason
    return _run(
        machine,
        ctx,
        handling,
        incoming,
        snapshot.state,
        runtime,
        snapshot.business_key,
        Outcome.TRANSITIONED,
        snapshot=snapshot,
    )


def _context(
    machine: Machine[S, D], snapshot: SagaSnapshot, now: datetime, config: EngineConfig
) -> StepContext[S, D]:
    """The context of a step on an existing saga: its state and data, at the next version."""
    return StepContext(
        machine.compensation_rules,
        saga_id=snapshot.saga_id,
        state=machine.states(snapshot.state),
        data=machine.data_model.model_validate(snapshot.data),
        version=snapshot.version + 1,
        now=now,
        config=config,
    )


def _start(
    machine: Machine[S, D], incoming: Incoming, now: datetime, config: EngineConfig
) -> Decision:
    start = machine.starts.get(incoming.trigger)
    if start is None:
        raise UnknownSaga(f"no saga {incoming.saga_id} and {incoming.trigger} does not start one")
    data: D = start.init(incoming.payload)  # type: ignore[assignment]
    ctx: StepContext[S, D] = StepContext(
        machine.compensation_rules,
        saga_id=incoming.saga_id,
        state=None,
        data=data,
        version=1,
        now=now,
        config=config,
    )
    key = start.key(incoming.payload)
    return _run(
        machine, ctx, start.transition, incoming, None, RuntimeState(), key, Outcome.STARTED
    )


def _run(
    machine: Machine[S, D],
    ctx: StepContext[S, D],
    transition: Transition,
    incoming: Incoming,
    from_state: str | None,
    runtime: RuntimeState,
    business_key: str,
    outcome: Outcome,
    *,
    snapshot: SagaSnapshot | None = None,
) -> Decision:
    if transition.action is not None:
        transition.action(ctx, incoming.payload)
    effects = ctx.effects
    if effects.ignored is not None:
        return _ignored_by_action(ctx, incoming, snapshot)
    if effects.goto is not None and effects.compensate_to is not None:
        raise ActionError(f"{incoming.trigger}: an action may goto or compensate, not both")
    if effects.compensate_to is None:
        target = effects.goto
        if target is None:
            if len(transition.targets) != 1:
                raise ActionError(f"({from_state}, {incoming.trigger}) must choose a target state")
            (target,) = transition.targets
        if target not in transition.targets:
            raise ActionError(f"({from_state}, {incoming.trigger}) may not go to {target}")
    runtime = _replace(
        runtime,
        outstanding=runtime.outstanding | frozenset(effects.sent),
        compensations=runtime.compensations + tuple(effects.pushed),
        reason=effects.reason or runtime.reason,
    )
    outgoing = list(effects.outgoing)
    timers = dict(effects.timers)
    if effects.compensate_to is not None:
        # Forward steps still in flight no longer matter: their late replies become stale,
        # and each step's compensation copes with "never happened" (workers keep void markers).
        runtime = _replace(
            runtime, outstanding=frozenset(), compensation_target=effects.compensate_to
        )
        target, runtime = _next_compensation(machine, ctx, runtime, outgoing, timers)
        if target not in transition.targets:
            raise ActionError(f"({from_state}, {incoming.trigger}) may not go to {target}")
    assert target is not None
    step = _Step(machine, ctx, from_state, runtime, outgoing, timers)
    return step.finish(target, incoming.payload, outcome, business_key, ctx.version)


@dataclasses.dataclass
class _Step:
    """What a step has decided so far; `finish` is the one way every kind of step ends."""

    machine: Machine[Any, Any]
    ctx: StepContext[Any, Any]
    from_state: str | None
    runtime: RuntimeState
    outgoing: list[Outgoing]
    timers: dict[str, TimerChange]

    def finish(
        self, target: str, payload: Any, outcome: Outcome, business_key: str, version: int
    ) -> Decision:
        """Enter `target` (running its entry action, whose commands and timers join the
        step's), release what a final state no longer awaits, and say it as a Decision."""
        machine, ctx, runtime = self.machine, self.ctx, self.runtime
        if target != self.from_state and target in machine.entry_actions:
            before = len(ctx.effects.outgoing)
            machine.entry_actions[target](ctx, payload)
            self.outgoing += ctx.effects.outgoing[before:]
            self.timers.update(ctx.effects.timers)
        finished = target in machine.final
        if finished:
            runtime = _replace(runtime, outstanding=frozenset())
        return Decision(
            outcome=outcome,
            from_state=self.from_state,
            to_state=target,
            data=ctx.data.model_dump(mode="json"),
            runtime=runtime,
            outgoing=tuple(self.outgoing),
            timers=tuple(self.timers.values()),
            finished=finished,
            note="; ".join(ctx.effects.notes),
            business_key=business_key,
            version=version,
        )


def _ignored_by_action(
    ctx: StepContext[S, D], incoming: Incoming, snapshot: SagaSnapshot | None
) -> Decision:
    """The action decided from the saga's data that its message changes nothing."""
    effects = ctx.effects
    assert effects.ignored is not None
    if snapshot is None:
        raise ActionError(f"{incoming.trigger}: a starting event cannot be ignored")
    recorded = effects.outgoing or effects.timers or effects.pushed
    if recorded or effects.goto is not None or effects.compensate_to is not None:
        raise ActionError(
            f"({snapshot.state}, {incoming.trigger}) ignored its message but recorded effects"
        )
    return _unchanged(snapshot, Outcome.IGNORED, "; ".join([*effects.notes, effects.ignored]))


def _next_compensation(
    machine: Machine[S, D],
    ctx: StepContext[S, D],
    runtime: RuntimeState,
    outgoing: list[Outgoing],
    timers: dict[str, TimerChange],
) -> tuple[str, RuntimeState]:
    """Send the top compensation, or finish in the target state when none is left."""
    if not runtime.compensations:
        timers[COMPENSATION_TIMER.name] = TimerChange(COMPENSATION_TIMER.name, None)
        target = runtime.compensation_target or machine.compensation_failed
        return target, _replace(runtime, compensation_target=None)
    top = runtime.compensations[-1]
    command_class = message_class(top.command_type)
    if command_class is None:  # pragma: no cover - registry and machine are built together
        raise ActionError(f"unknown compensation command {top.command_type}")
    command = command_class.model_validate(top.payload, strict=False)
    message_id = ctx.send(command)  # type: ignore[arg-type]
    outgoing.append(ctx.effects.outgoing[-1])
    ctx.schedule(COMPENSATION_TIMER.name, ctx.config.step_timeout)
    timers[COMPENSATION_TIMER.name] = ctx.effects.timers[COMPENSATION_TIMER.name]
    return machine.compensating, _replace(runtime, outstanding=frozenset({message_id}))


def _compensation_step(
    machine: Machine[S, D],
    snapshot: SagaSnapshot,
    incoming: Incoming,
    now: datetime,
    config: EngineConfig,
) -> Decision:
    runtime = snapshot.runtime
    top = runtime.compensations[-1] if runtime.compensations else None
    ctx = _context(machine, snapshot, now, config)
    ctx.reason = runtime.reason
    outgoing: list[Outgoing] = []
    timers: dict[str, TimerChange] = {}
    if incoming.trigger == COMPENSATION_TIMER.trigger:
        target = machine.compensation_failed
        reason = f"compensation {top.command_type if top else '?'} got no confirmation in time"
        runtime = _replace(runtime, outstanding=frozenset(), reason=reason)
        ctx.reason = reason
        ctx.note(reason)
    elif top is not None and incoming.trigger == top.confirmed_by:
        runtime = _replace(runtime, compensations=runtime.compensations[:-1])
        ctx.note(f"compensated {top.command_type}")
        target, runtime = _next_compensation(machine, ctx, runtime, outgoing, timers)
    else:
        return _unchanged(snapshot, Outcome.IGNORED, "ignored while compensating")
    step = _Step(machine, ctx, snapshot.state, runtime, outgoing, timers)
    return step.finish(
        target, incoming.payload, Outcome.TRANSITIONED, snapshot.business_key, snapshot.version + 1
    )


def _operator_step(
    machine: Machine[S, D],
    snapshot: SagaSnapshot,
    request: OperatorRequest,
    now: datetime,
    config: EngineConfig,
) -> Decision:
    """Abort, compensate or skip on an operator's word; the engine's rules still hold."""
    if snapshot.finished or snapshot.state in machine.final:
        raise OperatorRefused(f"saga is already {snapshot.state}")
    ctx = _context(machine, snapshot, now, config)
    why = f"{request.action} by {request.operator}: {request.reason}"
    ctx.note(why)
    # Whatever was in flight is no longer awaited: late replies become stale.
    runtime = _replace(snapshot.runtime, outstanding=frozenset())
    outgoing: list[Outgoing] = []
    timers: dict[str, TimerChange] = {}
    compensating = snapshot.state == machine.compensating
    if request.action == "abort":
        target = machine.aborted
        runtime = _replace(runtime, reason=why, compensation_target=None)
    elif request.action == "compensate":
        if compensating:
            raise OperatorRefused("saga is already compensating")
        if snapshot.runtime.outstanding:
            # The step in flight may still take effect, and its undo is not on the stack until
            # its reply confirms it: compensating now could leave it done and never undone.
            raise OperatorRefused(
                "a command is still in flight: wait for its reply or its step timeout "
                "(or `retry` it), or `abort` the saga"
            )
        if not machine.compensation_targets:
            raise OperatorRefused(f"workflow {machine.name} has no compensation")
        default = machine.compensation_targets[0].value
        runtime = _replace(runtime, compensation_target=default, reason=why)
        target, runtime = _next_compensation(machine, ctx, runtime, outgoing, timers)
    elif compensating:  # skip the compensation in flight: count it as confirmed
        if not runtime.compensations:
            raise OperatorRefused("no compensation to skip")
        runtime = _replace(runtime, compensations=runtime.compensations[:-1])
        target, runtime = _next_compensation(machine, ctx, runtime, outgoing, timers)
    else:
        # Only into a final state: a waiting state would await a command nobody sent.
        allowed = {
            t
            for s, trig, t in machine.edges()
            if s == snapshot.state and not is_operator(trig) and t in machine.final
        }
        if request.to_state not in allowed:
            choices = ", ".join(sorted(allowed)) or "none"
            raise OperatorRefused(f"skip from {snapshot.state} needs --to one of: {choices}")
        target = request.to_state
    ctx.reason = runtime.reason
    step = _Step(machine, ctx, snapshot.state, runtime, outgoing, timers)
    # An operator's step has no message: entry actions get None as their payload.
    return step.finish(
        target, None, Outcome.TRANSITIONED, snapshot.business_key, snapshot.version + 1
    )


def _unchanged(snapshot: SagaSnapshot, outcome: Outcome, note: str) -> Decision:
    return Decision(
        outcome=outcome,
        from_state=snapshot.state,
        to_state=snapshot.state,
        data=snapshot.data,
        runtime=snapshot.runtime,
        finished=snapshot.finished,
        note=note,
        business_key=snapshot.business_key,
        version=snapshot.version,
    )


def _replace(runtime: RuntimeState, **changes: Any) -> RuntimeState:
    return dataclasses.replace(runtime, **changes)
