"""The workflow engine: a declarative state-machine DSL and a pure decide step."""

from orchestrator.engine.context import StepContext
from orchestrator.engine.decide import decide
from orchestrator.engine.machine import DefinitionError, Machine, Timer
from orchestrator.engine.model import (
    CompensationEntry,
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
)

__all__ = [
    "CompensationEntry",
    "Decision",
    "DefinitionError",
    "EngineConfig",
    "Incoming",
    "Machine",
    "OperatorRefused",
    "OperatorRequest",
    "Outcome",
    "Outgoing",
    "RuntimeState",
    "SagaSnapshot",
    "StepContext",
    "Timer",
    "TimerChange",
    "UnknownSaga",
    "WrongWorkflow",
    "decide",
]
