"""The declarative workflow definition: states, triggers, transitions, compensations.

A Machine is built once at import time by a workflow module and validated when loaded: every
(active state, trigger) pair must be handled or explicitly ignored, every target must be a
known state, every state reachable. It can list itself for diagrams and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel

from contracts.base import Command, Event, Message, ReplyEvent
from orchestrator.engine.context import CompensationRules, StepContext
from orchestrator.engine.model import OPERATOR_PREFIX, TIMER_PREFIX, DefinitionError, is_operator

S = TypeVar("S", bound=StrEnum)
D = TypeVar("D", bound=BaseModel)
E = TypeVar("E", bound=Message)

Action = Callable[[StepContext[S, D], Any], None]


@dataclass(frozen=True)
class Timer:
    """A named timer as a trigger: `machine.on(state, Timer("payment-timeout"), ...)`."""

    name: str

    @property
    def trigger(self) -> str:
        return TIMER_PREFIX + self.name


Trigger = type[Event] | Timer


def trigger_name(trigger: Trigger) -> str:
    return trigger.trigger if isinstance(trigger, Timer) else trigger.message_type


@dataclass(frozen=True)
class Transition:
    source: str | None
    """None for a starting transition (no saga yet)."""
    trigger: str
    targets: frozenset[str]
    action: Action[Any, Any] | None
    message_class: type[Message] | None


@dataclass(frozen=True)
class Start:
    transition: Transition
    init: Callable[[Any], BaseModel]
    key: Callable[[Any], str]


@dataclass(frozen=True)
class Ignore:
    source: str
    trigger: str
    why: str


COMPENSATION_TIMER = Timer("compensation-step")
OPERATOR_ABORT = OPERATOR_PREFIX + "abort"
OPERATOR_COMPENSATE = OPERATOR_PREFIX + "compensate"
OPERATOR_SKIP = OPERATOR_PREFIX + "skip"


class Machine(Generic[S, D]):
    def __init__(
        self,
        name: str,
        *,
        states: type[S],
        data: type[D],
        final: Iterable[S],
        compensating: S,
        compensation_failed: S,
        aborted: S,
        version: int = 1,
    ) -> None:
        if version < 1:
            raise DefinitionError(f"{name}: versions count from 1, not {version}")
        self.name = name
        self.version = version
        """The readable half of the definition version (the other is its hash, versioning.py);
        a saga started under it is decided by this machine until it finishes or is migrated."""
        self.states = states
        self.data_model = data
        self.final = frozenset(s.value for s in final) | {
            compensation_failed.value,
            aborted.value,
        }
        self.compensating = compensating.value
        self.compensation_failed = compensation_failed.value
        self.aborted = aborted.value
        self.starts: dict[str, Start] = {}
        self.transitions: dict[tuple[str, str], Transition] = {}
        self.ignores: dict[tuple[str, str], Ignore] = {}
        self.entry_actions: dict[str, Action[S, D]] = {}
        self.compensations: dict[str, str] = {}
        self.compensation_targets: list[S] = []
        """Final states compensation may end in; the first is where an operator's one goes."""
        self.event_classes: dict[str, type[Event]] = {}
        self.from_previous: dict[str, str] = {}
        """States of the previous version -> the state a saga in them continues in here."""

    # --- building ----------------------------------------------------------------------------

    def start(
        self,
        on: type[E],
        *,
        key: Callable[[E], str],
        init: Callable[[E], D],
        to: S | Iterable[S],
        do: Callable[[StepContext[S, D], E], None] | None = None,
    ) -> None:
        """A starting event: creates the saga (business key unique per workflow)."""
        self._remember(on)
        if on.message_type in self.starts:
            raise DefinitionError(f"{self.name}: starting event {on.message_type} declared twice")
        transition = Transition(None, on.message_type, _targets(to), do, on)
        self.starts[on.message_type] = Start(transition, init, key)

    @overload
    def on(
        self,
        state: S | Iterable[S],
        trigger: type[E],
        *,
        to: S | Iterable[S],
        do: Callable[[StepContext[S, D], E], None] | None = None,
    ) -> None: ...

    @overload
    def on(
        self,
        state: S | Iterable[S],
        trigger: Timer,
        *,
        to: S | Iterable[S],
        do: Callable[[StepContext[S, D], None], None] | None = None,
    ) -> None: ...

    def on(
        self,
        state: S | Iterable[S],
        trigger: type[E] | Timer,
        *,
        to: S | Iterable[S],
        do: Callable[[StepContext[S, D], Any], None] | None = None,
    ) -> None:
        if not isinstance(trigger, Timer):
            self._remember(trigger)
        name = trigger.trigger if isinstance(trigger, Timer) else trigger.message_type
        for source in _states(state):
            key = (source, name)
            if key in self.transitions or key in self.ignores:
                raise DefinitionError(f"{self.name}: ({source}, {name}) declared twice")
            message_class = None if isinstance(trigger, Timer) else trigger
            self.transitions[key] = Transition(source, name, _targets(to), do, message_class)

    def ignore(self, state: S | Iterable[S], *triggers: Trigger, why: str) -> None:
        """Declare that these triggers change nothing in these states (recorded in history)."""
        for trigger in triggers:
            if not isinstance(trigger, Timer):
                self._remember(trigger)
            name = trigger_name(trigger)
            for source in _states(state):
                key = (source, name)
                if key in self.transitions or key in self.ignores:
                    raise DefinitionError(f"{self.name}: ({source}, {name}) declared twice")
                self.ignores[key] = Ignore(source, name, why)

    def on_enter(self, state: S, do: Callable[[StepContext[S, D], Any], None]) -> None:
        """An action run whenever a step ends in `state` having come from another state."""
        self.entry_actions[state.value] = do

    def compensation(self, command: type[Command], *, confirmed_by: type[ReplyEvent]) -> None:
        """Register a compensating command and the reply that confirms it."""
        self._remember(confirmed_by)
        self.compensations[command.message_type] = confirmed_by.message_type

    def compensates_to(self, *states: S) -> None:
        """Final states a compensation may end in (e.g. failed, cancelled), default first."""
        self.compensation_targets.extend(s for s in states if s not in self.compensation_targets)

    def continues(self, previous_states: dict[str, S]) -> None:
        """Where a saga of the previous version continues when it is migrated to this one:
        previous state name -> state here. A state of the previous version that this one lacks
        and does not map is stranded (the snapshot check refuses it)."""
        if self.version == 1:
            raise DefinitionError(f"{self.name}: version 1 has no previous version to continue")
        self.from_previous.update({old: new.value for old, new in previous_states.items()})

    def compensation_reply(self, command: type[Command]) -> str:
        return self.compensation_rules.reply_to(command)

    @property
    def compensation_rules(self) -> CompensationRules:
        """What a step's actions may know of the compensations (StepContext gets only this)."""
        return CompensationRules(
            self.name,
            dict(self.compensations),
            tuple(state.value for state in self.compensation_targets),
        )

    def _remember(self, message: type[Message]) -> None:
        if issubclass(message, Event):
            self.event_classes[message.message_type] = message

    # --- introspection -----------------------------------------------------------------------

    @property
    def active_states(self) -> list[S]:
        return [
            s for s in self.states if s.value not in self.final and s.value != self.compensating
        ]

    @property
    def triggers(self) -> set[str]:
        names = {t for (_, t) in self.transitions} | {t for (_, t) in self.ignores}
        return names | set(self.starts) | set(self.compensations.values())

    @property
    def consumed_events(self) -> list[str]:
        """Event types the orchestrator must receive for this workflow (its queue bindings)."""
        return sorted(self.event_classes)

    def edges(self) -> list[tuple[str | None, str, str]]:
        """(source, trigger, target) for every possible move, including compensation's."""
        result: list[tuple[str | None, str, str]] = []
        for start in self.starts.values():
            result += [
                (None, start.transition.trigger, t) for t in sorted(start.transition.targets)
            ]
        for (source, trigger), transition in sorted(self.transitions.items()):
            result += [(source, trigger, t) for t in sorted(transition.targets)]
        for reply in sorted(set(self.compensations.values())):
            result.append((self.compensating, reply, self.compensating))
            result += [(self.compensating, reply, t.value) for t in self.compensation_targets]
        result.append((self.compensating, COMPENSATION_TIMER.trigger, self.compensation_failed))
        # Operator actions apply to every unfinished saga (see decide: operator steps).
        for state in [*self.active_states, self.states(self.compensating)]:
            result.append((state.value, OPERATOR_ABORT, self.aborted))
        if self.compensation_targets:
            for state in self.active_states:
                for target in (self.compensating, self.compensation_targets[0].value):
                    result.append((state.value, OPERATOR_COMPENSATE, target))
            result.append((self.compensating, OPERATOR_SKIP, self.compensating))
            result += [
                (self.compensating, OPERATOR_SKIP, t.value) for t in self.compensation_targets
            ]
        forward_finals = {
            (source, target)
            for source, trigger, target in result
            if source in {s.value for s in self.active_states}
            and target in self.final
            and not is_operator(trigger)
        }
        result += [(s, OPERATOR_SKIP, t) for s, t in sorted(forward_finals)]
        return result

    def validate(self) -> None:
        """Raise DefinitionError listing every gap; called when the workflow is registered."""
        problems: list[str] = []
        known = {s.value for s in self.states}
        if not self.starts:
            problems.append("no starting event")
        for source, trigger, target in self.edges():
            if target not in known:
                problems.append(f"({source}, {trigger}) targets unknown state {target!r}")
            if source is not None and source in self.final:
                problems.append(f"final state {source} has a transition on {trigger}")
        for source, trigger in self.transitions.keys() | self.ignores.keys():
            if source == self.compensating:
                # The engine alone drives compensation; a declared pair would never run.
                problems.append(f"({source}, {trigger}) declared, but {source} is engine-driven")
        for state in self.active_states:
            for trigger in sorted(self.triggers):
                if trigger in self.compensations.values() and (state.value, trigger) not in (
                    self.transitions.keys() | self.ignores.keys()
                ):
                    # Compensation confirmations outside `compensating` are late duplicates.
                    continue
                if (state.value, trigger) not in self.transitions and (
                    state.value,
                    trigger,
                ) not in self.ignores:
                    problems.append(f"({state.value}, {trigger}) is neither handled nor ignored")
        reachable = self._reachable()
        for state in self.states:
            if state.value not in reachable:
                problems.append(f"state {state.value} is unreachable")
        for command in self.compensations:
            if not self.compensation_targets:
                problems.append(f"compensation {command} registered but no compensation target")
        for old, new in sorted(self.from_previous.items()):
            if new in self.final:
                # A running saga moved there would skip the steps (and effects) leading there.
                problems.append(f"previous state {old} continues in final state {new}")
        if problems:
            raise DefinitionError(f"workflow {self.name!r}:\n  " + "\n  ".join(problems))

    def _reachable(self) -> set[str]:
        edges = self.edges()
        seen: set[str] = set()
        frontier = [t for s, _, t in edges if s is None]
        while frontier:
            state = frontier.pop()
            if state in seen:
                continue
            seen.add(state)
            frontier += [t for s, _, t in edges if s == state]
        return seen

    def handling(self, state: str, trigger: str) -> Transition | Ignore | None:
        return self.transitions.get((state, trigger)) or self.ignores.get((state, trigger))


def _states(value: StrEnum | Iterable[StrEnum]) -> list[str]:
    if isinstance(value, StrEnum):
        return [value.value]
    return [s.value for s in value]


def _targets(value: StrEnum | Iterable[StrEnum]) -> frozenset[str]:
    return frozenset(_states(value))
