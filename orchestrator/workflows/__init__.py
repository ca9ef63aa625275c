"""Every workflow the orchestrator runs, by name and by the event types it consumes."""

from __future__ import annotations

from typing import Any

from orchestrator.engine import Machine
from orchestrator.workflows import order

_MACHINES: list[Machine[Any, Any]] = [order.machine]
from orchestrator.workflows import enrollment  # noqa: E402 - registered at its marker line

_MACHINES.append(enrollment.machine)
# enrollment-workflow-here
from orchestrator.workflows import documents  # noqa: E402 - registered at its marker line

_MACHINES.append(documents.machine)
# documents-workflow-here

WORKFLOWS: dict[str, Machine[Any, Any]] = {m.name: m for m in _MACHINES}


def _index() -> dict[str, Machine[Any, Any]]:
    by_event: dict[str, Machine[Any, Any]] = {}
    for machine in WORKFLOWS.values():
        for event in machine.consumed_events:
            if event in by_event:
                raise RuntimeError(f"event {event} is consumed by two workflows")
            by_event[event] = machine
    return by_event


MACHINE_BY_EVENT = _index()


def machine_for(event_type: str) -> Machine[Any, Any] | None:
    return MACHINE_BY_EVENT.get(event_type)
