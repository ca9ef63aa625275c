"""The workflow engine: a declarative state-machine DSL and a pure decide step."""

from orchestrator.engine.context import CompensationRules, StepContext
from orchestrator.engine.decide import decide
from orchestrator.engine.machine import Machine, Timer
from orchestrator.engine.model import (
    CompensationEntry,
    Decision,
    DefinitionError,
    EngineConfig,
    Incoming,
    OperatorRefused,
    OperatorRequest,
    Outcome,
    Outgoing,
    RuntimeState,
    SagaSnapshot,
    TimerChange,
    UnexpectedMessage,
    UnknownSaga,
    WrongWorkflow,
)

__all__ = [
    "CompensationEntry",
    "CompensationRules",
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
    "UnexpectedMessage",
    "UnknownSaga",
    "WrongWorkflow",
    "decide",
]
