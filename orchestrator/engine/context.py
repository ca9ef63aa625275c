"""StepContext: what a workflow action sees and the effects it records.

Actions are plain functions `(ctx, message) -> None`. They read `ctx.data`, call methods that
record effects (send, publish, schedule, compensate, goto), and never perform I/O: the engine
turns the recorded effects into a Decision that the store applies in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel

from contracts.base import Command, Event
from contracts.ids import derived_id
from orchestrator.engine.model import (
    CompensationEntry,
    DefinitionError,
    EngineConfig,
    Outgoing,
    TimerChange,
)

S = TypeVar("S", bound=StrEnum)
D = TypeVar("D", bound=BaseModel)


class ActionError(Exception):
    """A workflow action broke a rule of the definition (a bug in the workflow, not the input)."""


@dataclass(frozen=True)
class CompensationRules:
    """What an action needs to know of its workflow's compensations (and nothing more of the
    definition, which itself refers to actions)."""

    workflow: str
    replies: Mapping[str, str]
    """Compensating command type -> the reply type that confirms it."""
    targets: tuple[str, ...]
    """Final states a compensation may end in, default first."""

    def reply_to(self, command: type[Command]) -> str:
        try:
            return self.replies[command.message_type]
        except KeyError:
            raise DefinitionError(
                f"{self.workflow}: {command.message_type} is not a registered compensation"
            ) from None


@dataclass
class _Effects:
    outgoing: list[Outgoing] = field(default_factory=list)
    timers: dict[str, TimerChange] = field(default_factory=dict)
    sent: list[uuid.UUID] = field(default_factory=list)
    pushed: list[CompensationEntry] = field(default_factory=list)
    goto: str | None = None
    compensate_to: str | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    ignored: str | None = None


class StepContext(Generic[S, D]):
    def __init__(
        self,
        compensation: CompensationRules,
        *,
        saga_id: uuid.UUID,
        state: S | None,
        data: D,
        version: int,
        now: datetime,
        config: EngineConfig,
    ) -> None:
        self._compensation = compensation
        self.saga_id = saga_id
        self.state = state
        self.data = data
        self.now = now
        self.config = config
        self._new_version = version
        self._effects = _Effects()
        self.reason: str | None = None
        """Why the saga is failing (set by goto/compensate, or carried over from earlier steps)."""

    # --- effects -----------------------------------------------------------------------------

    def send(self, command: Command) -> uuid.UUID:
        """Send a command to its worker and await its reply (replies to older sends are stale)."""
        message_id = self._message_id(command.message_type)
        self._effects.outgoing.append(Outgoing("command", command, message_id))
        self._effects.sent.append(message_id)
        return message_id

    def publish(self, event: Event) -> None:
        """Publish a domain event for other services (no reply expected)."""
        self._effects.outgoing.append(
            Outgoing("event", event, self._message_id(event.message_type))
        )

    def schedule(self, name: str, after: timedelta) -> None:
        """Set (or move) the saga's timer `name`; it fires once as trigger Timer(name)."""
        message_id = derived_id(self.saga_id, f"timer:{name}:{self._new_version}")
        self._effects.timers[name] = TimerChange(name, self.now + after, message_id)

    def cancel_timer(self, name: str) -> None:
        self._effects.timers[name] = TimerChange(name, None)

    def push_compensation(self, command: Command) -> None:
        """Remember how to undo a completed step; compensations run last-in, first-out."""
        confirmed_by = self._compensation.reply_to(type(command))
        self._effects.pushed.append(
            CompensationEntry(command.message_type, command.model_dump(mode="json"), confirmed_by)
        )

    def compensate(self, then: S, reason: str) -> None:
        """Undo every completed step in reverse order, then end in `then`."""
        if then.value not in self._compensation.targets:
            raise ActionError(f"{then} is not a declared compensation target")
        self._effects.compensate_to = then.value
        self._effects.reason = reason
        self.reason = reason

    def goto(self, state: S, reason: str | None = None) -> None:
        self._effects.goto = state.value
        if reason is not None:
            self._effects.reason = reason
            self.reason = reason

    def ignore(self, why: str) -> None:
        """Conclude from the saga's data that this message changes nothing (e.g. a duplicate).

        The step is recorded like a declared ignore: outcome IGNORED with `why` as its note, no
        new version, and any change the action made to `ctx.data` is dropped. An action that
        ignores may record no other effect (the engine raises ActionError if it does). For
        transition actions of an existing saga: starting and entry actions cannot ignore.
        """
        self._effects.ignored = why

    def note(self, text: str) -> None:
        """Add a line to this step's history entry (operators read it; no payload values)."""
        self._effects.notes.append(text)

    # --- internal ------------------------------------------------------------------------------

    def _message_id(self, message_type: str) -> uuid.UUID:
        # Deterministic: the same decision re-made after a conflict yields the same ids, and an
        # operator's re-send of an outstanding command is recognisably the same command. With
        # the saga id's time prefix, so that a saga's commands sort with its start (contracts.ids).
        index = len(self._effects.outgoing)
        return derived_id(self.saga_id, f"{self._new_version}:{index}:{message_type}")

    @property
    def effects(self) -> _Effects:
        return self._effects

    @property
    def version(self) -> int:
        """The saga's version once this step is applied."""
        return self._new_version
