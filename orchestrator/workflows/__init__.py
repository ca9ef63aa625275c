"""Every workflow the orchestrator runs: the value its composition root gives the store."""

from __future__ import annotations

from typing import Any

from orchestrator.engine import Machine
from orchestrator.engine.registry import Workflows
from orchestrator.workflows import documents, enrollment, order

WORKFLOWS = Workflows.of(order.machine, enrollment.machine, documents.machine)


def machine_for(event_type: str) -> Machine[Any, Any] | None:
    return WORKFLOWS.for_event(event_type)
