"""Workflows: the set of machines one orchestrator runs, built once at the composition root.

The store is given this value instead of importing a global registry, so which workflows a
process runs is answered where the process is composed (and a test can pass one machine).

A workflow may be loaded in several versions at once: new sagas start under the newest, and a
saga already running is decided by the version it started under (its `definition_version`),
so a deploy never changes the meaning of a running saga by accident.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.engine.machine import Machine
from orchestrator.engine.model import Incoming, SagaSnapshot, UnexpectedMessage


class UnknownDefinition(UnexpectedMessage):
    """The saga runs under a version of its workflow this process does not load."""


@dataclass(frozen=True)
class Workflows(Mapping[str, Machine[Any, Any]]):
    """The newest machine of each workflow by name (it is a read-only mapping), every loaded
    version of each, and the workflow that consumes each event type."""

    by_name: Mapping[str, Machine[Any, Any]]
    by_event: Mapping[str, Machine[Any, Any]]
    versions: Mapping[str, Mapping[int, Machine[Any, Any]]]

    @classmethod
    def of(cls, *machines: Machine[Any, Any]) -> Workflows:
        versions: dict[str, dict[int, Machine[Any, Any]]] = {}
        for machine in machines:
            loaded = versions.setdefault(machine.name, {})
            if machine.version in loaded:
                raise ValueError(f"workflow {machine.name} v{machine.version} is given twice")
            loaded[machine.version] = machine
        by_name = {name: loaded[max(loaded)] for name, loaded in versions.items()}
        by_event: dict[str, Machine[Any, Any]] = {}
        for name, loaded in versions.items():
            # Every version's events: sagas of an older version still wait for theirs.
            for event in sorted({e for m in loaded.values() for e in m.consumed_events}):
                owner = by_event.get(event)
                if owner is not None and owner.name != name:
                    raise ValueError(f"event {event} is consumed by two workflows")
                by_event[event] = by_name[name]
        return cls(by_name, by_event, {n: dict(sorted(v.items())) for n, v in versions.items()})

    def __getitem__(self, name: str) -> Machine[Any, Any]:
        return self.by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def machines(self) -> Iterator[Machine[Any, Any]]:
        """Every loaded machine, every version of every workflow."""
        for loaded in self.versions.values():
            yield from loaded.values()

    def version(self, workflow: str, version: int) -> Machine[Any, Any] | None:
        return self.versions.get(workflow, {}).get(version)

    def for_event(self, event_type: str) -> Machine[Any, Any] | None:
        """The newest machine of the workflow that consumes `event_type` (starts sagas)."""
        return self.by_event.get(event_type)

    def machine_for(self, incoming: Incoming, snapshot: SagaSnapshot | None) -> Machine[Any, Any]:
        """The machine that decides `incoming`; UnexpectedMessage when none does."""
        if incoming.payload is None:  # a timer or an operator: the saga's own workflow
            if snapshot is None:
                raise UnexpectedMessage(f"{incoming.trigger} for a saga that does not exist")
            return self._saga_machine(snapshot)
        machine = self.for_event(incoming.trigger)
        if machine is None:
            raise UnexpectedMessage(f"no workflow consumes {incoming.trigger}")
        if snapshot is None or snapshot.workflow != machine.name:
            return machine  # a start, or another workflow's saga (decide refuses that)
        return self._saga_machine(snapshot)

    def _saga_machine(self, snapshot: SagaSnapshot) -> Machine[Any, Any]:
        machine = self.version(snapshot.workflow, snapshot.definition_version)
        if machine is None:
            loaded = ", ".join(f"v{v}" for v in self.versions.get(snapshot.workflow, {}))
            raise UnknownDefinition(
                f"saga runs {snapshot.workflow} v{snapshot.definition_version}, which this "
                f"process does not load (loaded: {loaded or 'none'}); deploy that version "
                "again or migrate the saga (`sagaline saga migrate`)"
            )
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
