"""Workflows: the set of machines one orchestrator runs, built once at the composition root.

The store is given this value instead of importing a global registry, so which workflows a
process runs is answered where the process is composed (and a test can pass one machine).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.engine.machine import Machine
from orchestrator.engine.model import Incoming, SagaSnapshot, UnexpectedMessage


@dataclass(frozen=True)
class Workflows(Mapping[str, Machine[Any, Any]]):
    """Machines by name (it is a read-only mapping) and by the event types they consume."""

    by_name: Mapping[str, Machine[Any, Any]]
    by_event: Mapping[str, Machine[Any, Any]]

    @classmethod
    def of(cls, *machines: Machine[Any, Any]) -> Workflows:
        by_name: dict[str, Machine[Any, Any]] = {}
        by_event: dict[str, Machine[Any, Any]] = {}
        for machine in machines:
            if machine.name in by_name:
                raise ValueError(f"two workflows are named {machine.name}")
            by_name[machine.name] = machine
            for event in machine.consumed_events:
                if event in by_event:
                    raise ValueError(f"event {event} is consumed by two workflows")
                by_event[event] = machine
        return cls(by_name, by_event)

    def __getitem__(self, name: str) -> Machine[Any, Any]:
        return self.by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def for_event(self, event_type: str) -> Machine[Any, Any] | None:
        return self.by_event.get(event_type)

    def machine_for(self, incoming: Incoming, snapshot: SagaSnapshot | None) -> Machine[Any, Any]:
        """The machine that decides `incoming`; UnexpectedMessage when none does."""
        if incoming.payload is None:  # a timer or an operator: the saga's own workflow
            if snapshot is None:
                raise UnexpectedMessage(f"{incoming.trigger} for a saga that does not exist")
            return self.by_name[snapshot.workflow]
        machine = self.for_event(incoming.trigger)
        if machine is None:
            raise UnexpectedMessage(f"no workflow consumes {incoming.trigger}")
        return machine

    def start_key(self, incoming: Incoming) -> tuple[str, str] | None:
        """(workflow, business key) a starting event would claim, to look up its owner."""
        if incoming.payload is None:
            return None
        machine = self.for_event(incoming.trigger)
        start = machine.starts.get(incoming.trigger) if machine is not None else None
        if machine is None or start is None:
            return None
        return machine.name, start.key(incoming.payload)
