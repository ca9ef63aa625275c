"""Plain data the engine reads and returns: snapshots in, decisions out. No I/O anywhere."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from contracts.base import Message, ReplyEvent
from contracts.envelope import Envelope
from contracts.ids import uuid7
from sagaline.messaging.errors import ReportableError

TIMER_PREFIX = "timer:"
OPERATOR_PREFIX = "operator:"


def is_operator(trigger: str) -> bool:
    """Whether a trigger is an operator's action (abort, compensate, skip)."""
    return trigger.startswith(OPERATOR_PREFIX)


def timer_name(trigger: str) -> str | None:
    """The timer's name when the trigger is a timer firing, else None."""
    return trigger.removeprefix(TIMER_PREFIX) if trigger.startswith(TIMER_PREFIX) else None


class DefinitionError(Exception):
    """The workflow definition is inconsistent; the message lists every problem found."""


class OperatorRefused(ReportableError):
    """An operator action that does not apply to the saga as it is (finished, wrong state)."""


@dataclass(frozen=True)
class OperatorRequest:
    """An operator's way out of a stuck saga; recorded in its history with who and why."""

    action: Literal["abort", "compensate", "skip"]
    operator: str
    reason: str
    to_state: str | None = None
    """For `skip` outside compensation: the state to move to (a declared target)."""


class UnexpectedMessage(ReportableError):
    """No workflow consumes this message type."""


class UnknownSaga(ReportableError):
    """A non-starting event names a saga that does not exist."""


class WrongWorkflow(ReportableError):
    """An event belongs to another workflow than the saga its correlation id names."""


@dataclass(frozen=True)
class EngineConfig:
    step_timeout: timedelta = timedelta(minutes=2)
    """How long a command may go unanswered before the workflow treats the step as failed."""


@dataclass(frozen=True)
class CompensationEntry:
    """A command that undoes a completed step, and the reply that confirms it."""

    command_type: str
    payload: dict[str, Any]
    confirmed_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command_type,
            "payload": self.payload,
            "confirmed_by": self.confirmed_by,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CompensationEntry:
        return cls(raw["command"], dict(raw["payload"]), raw["confirmed_by"])


@dataclass(frozen=True)
class RuntimeState:
    """Engine bookkeeping stored beside the workflow's own data (column `runtime`)."""

    outstanding: frozenset[uuid.UUID] = frozenset()
    """Ids of commands whose reply the saga still waits for (replies to others are stale)."""
    compensations: tuple[CompensationEntry, ...] = ()
    """Stack of compensations; the last one runs first."""
    compensation_target: str | None = None
    """The final state to enter once every compensation is confirmed."""
    reason: str | None = None
    """Why the saga is compensating or failed, for operators and the published outcome."""

    def to_json(self) -> dict[str, Any]:
        return {
            "outstanding": sorted(str(m) for m in self.outstanding),
            "compensations": [c.to_json() for c in self.compensations],
            "compensation_target": self.compensation_target,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RuntimeState:
        return cls(
            outstanding=frozenset(uuid.UUID(m) for m in raw.get("outstanding", ())),
            compensations=tuple(
                CompensationEntry.from_json(c) for c in raw.get("compensations", ())
            ),
            compensation_target=raw.get("compensation_target"),
            reason=raw.get("reason"),
        )


@dataclass(frozen=True)
class SagaSnapshot:
    saga_id: uuid.UUID
    workflow: str
    business_key: str
    state: str
    data: dict[str, Any]
    runtime: RuntimeState
    version: int
    finished: bool
    updated_at: datetime | None = None
    """When the saga last changed state (for time-in-state metrics and stuck detection)."""
    definition_version: int = 1
    """The version of its workflow whose machine decides it (set at start, changed only by a
    migration); `version` above is the row's compare-and-swap counter."""


@dataclass(frozen=True)
class Incoming:
    """What the engine reacts to: a validated message or a timer that came due."""

    message_id: uuid.UUID
    saga_id: uuid.UUID
    trigger: str
    payload: Message | None
    causation_id: uuid.UUID | None = None
    operator: OperatorRequest | None = None

    @property
    def is_reply(self) -> bool:
        return isinstance(self.payload, ReplyEvent)

    @classmethod
    def from_envelope(cls, envelope: Envelope[Any]) -> Incoming:
        return cls(
            message_id=envelope.message_id,
            saga_id=envelope.correlation_id,
            trigger=envelope.type,
            payload=envelope.payload,
            causation_id=envelope.causation_id,
        )

    @classmethod
    def timer(cls, saga_id: uuid.UUID, name: str, message_id: uuid.UUID) -> Incoming:
        return cls(
            message_id=message_id, saga_id=saga_id, trigger=TIMER_PREFIX + name, payload=None
        )

    @classmethod
    def from_operator(cls, saga_id: uuid.UUID, request: OperatorRequest) -> Incoming:
        return cls(
            message_id=uuid7(),
            saga_id=saga_id,
            trigger=OPERATOR_PREFIX + request.action,
            payload=None,
            operator=request,
        )


@dataclass(frozen=True)
class Outgoing:
    kind: Literal["command", "event"]
    message: Message
    message_id: uuid.UUID


@dataclass(frozen=True)
class TimerChange:
    """Set (due_at given) or cancel (due_at None) the saga's timer of this name."""

    name: str
    due_at: datetime | None
    message_id: uuid.UUID | None = None


class Outcome(StrEnum):
    STARTED = "started"
    TRANSITIONED = "transitioned"
    IGNORED = "ignored"
    """Explicitly ignored in this state (recorded, no change)."""
    STALE = "stale"
    """A reply to a command the saga no longer waits for (recorded, no change)."""
    FINISHED = "finished"
    """An event for a saga that already ended (recorded, no change)."""
    DUPLICATE_START = "duplicate-start"
    """A starting event for a business key that already has a saga (recorded on that saga)."""


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    from_state: str | None
    to_state: str
    data: dict[str, Any]
    runtime: RuntimeState
    outgoing: tuple[Outgoing, ...] = ()
    timers: tuple[TimerChange, ...] = ()
    finished: bool = False
    note: str = ""
    business_key: str = ""
    version: int = 0
    """The saga's version after this decision (unchanged for outcomes that change nothing)."""

    @property
    def changes_saga(self) -> bool:
        return self.outcome in (Outcome.STARTED, Outcome.TRANSITIONED)
