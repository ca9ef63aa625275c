"""Definition versions: a workflow machine as plain data, its hash, and the checks on snapshots.

A version is a readable number (`Machine(version=N)`) plus the hash of what the machine
declares: its states, starting events, transitions, ignored pairs, the timers each state
handles, entry actions and compensations. Actions are code and are not hashed; neither is the
data model (a migration checks each saga's data against the target version instead).

Each version is kept as a snapshot document (generated, checked in, like migrations). The
checks here are pure: a loaded machine whose hash differs from its snapshot changed without a
new version; a version that lacks a waiting state of the previous one, and does not say where a
saga in it continues (`Machine.continues`), strands the sagas in that state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.engine.machine import Machine
from orchestrator.engine.model import TIMER_PREFIX

HASH_LENGTH = 12
Snapshot = Mapping[str, Any]
"""One version's document: workflow, version, hash, definition, continues_from_previous."""


def definition(machine: Machine[Any, Any]) -> dict[str, Any]:
    """What the version's hash covers, as JSON-ready data in a stable order."""
    handled = sorted(machine.transitions.keys() | machine.ignores.keys())
    timers: dict[str, list[str]] = {}
    for source, trigger in handled:
        if trigger.startswith(TIMER_PREFIX):
            timers.setdefault(source, []).append(trigger.removeprefix(TIMER_PREFIX))
    return {
        "states": sorted(s.value for s in machine.states),
        "final": sorted(machine.final),
        "compensating": machine.compensating,
        "compensation_failed": machine.compensation_failed,
        "aborted": machine.aborted,
        "starts": {
            trigger: sorted(start.transition.targets)
            for trigger, start in sorted(machine.starts.items())
        },
        "transitions": [
            {"from": source, "on": trigger, "to": sorted(transition.targets)}
            for (source, trigger), transition in sorted(machine.transitions.items())
        ],
        "ignores": [{"in": source, "on": trigger} for source, trigger in sorted(machine.ignores)],
        "timers": timers,
        "entry_actions": sorted(machine.entry_actions),
        "compensations": dict(sorted(machine.compensations.items())),
        "compensation_targets": [s.value for s in machine.compensation_targets],
    }


def definition_hash(machine: Machine[Any, Any]) -> str:
    return _hash(definition(machine))


def _hash(value: Mapping[str, Any]) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def label(machine: Machine[Any, Any]) -> str:
    """`order v2 (3f2a9c1b7d0e)`: how people read a definition version."""
    return f"{machine.name} v{machine.version} ({definition_hash(machine)})"


def snapshot(machine: Machine[Any, Any]) -> dict[str, Any]:
    """The checked-in document of the machine's version."""
    document: dict[str, Any] = {
        "workflow": machine.name,
        "version": machine.version,
        "hash": definition_hash(machine),
    }
    if machine.version > 1:
        document["continues_from_previous"] = dict(sorted(machine.from_previous.items()))
    document["definition"] = definition(machine)
    return document


def render(document: Snapshot) -> str:
    """The file text of a snapshot: stable, so that regenerating changes nothing, and one edge
    or list per line, so that the diff of a new version reads as what changed."""
    return _render(document, "") + "\n"


def _render(value: Any, indent: str) -> str:
    inner = indent + "  "
    if isinstance(value, Mapping) and value and any(_nested(v) for v in value.values()):
        items = [f"{inner}{json.dumps(k)}: {_render(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
        items = [inner + _render(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value)


def _nested(value: Any) -> bool:
    """Worth lines of its own: a mapping, or a list of mappings."""
    return isinstance(value, Mapping) or (
        isinstance(value, list) and any(isinstance(v, Mapping) for v in value)
    )


def check_machines(
    machines: Iterable[Machine[Any, Any]], snapshots: Mapping[tuple[str, int], Snapshot]
) -> list[str]:
    """Every loaded machine must equal its version's snapshot; one line per problem."""
    problems = []
    for machine in machines:
        key = (machine.name, machine.version)
        stored = snapshots.get(key)
        if stored is None:
            problems.append(
                f"{machine.name} v{machine.version} has no snapshot: "
                "run `sagaline workflows snapshot` and check the file in"
            )
            continue
        now = definition_hash(machine)
        if stored.get("hash") != now or _hash(stored.get("definition", {})) != now:
            problems.append(
                f"{machine.name} v{machine.version} changed since its snapshot "
                f"(hash {stored.get('hash')}, now {now}): leave v{machine.version} as it was "
                f"and make the change version {machine.version + 1} "
                "(README: Changing a workflow)"
            )
        elif render(stored) != render(snapshot(machine)):
            problems.append(
                f"{machine.name} v{machine.version}: its snapshot is out of date "
                "(continues_from_previous): run `sagaline workflows snapshot`"
            )
    return problems


def check_history(snapshots: Mapping[tuple[str, int], Snapshot]) -> list[str]:
    """Versions of each workflow count 1, 2, ... and none strands a waiting state of the one
    before it (a state it lacks and does not continue elsewhere)."""
    problems = []
    for workflow in sorted({name for name, _ in snapshots}):
        numbers = sorted(v for name, v in snapshots if name == workflow)
        if numbers != list(range(1, len(numbers) + 1)):
            shown = ", ".join(f"v{n}" for n in numbers)
            problems.append(f"{workflow}: snapshots {shown} do not count 1, 2, ... without gaps")
            continue
        for number in numbers[1:]:
            problems += stranded(snapshots[(workflow, number - 1)], snapshots[(workflow, number)])
    return problems


def stranded(previous: Snapshot, current: Snapshot) -> list[str]:
    """Problems of `current` taking over the running sagas of `previous`."""
    name, version = current["workflow"], current["version"]
    before, after = previous["definition"], current["definition"]
    mapping: Mapping[str, str] = current.get("continues_from_previous", {})
    problems = []
    waiting = [s for s in before["states"] if s not in before["final"]]
    for old, new in sorted(mapping.items()):
        if old not in before["states"]:
            problems.append(
                f"{name} v{version} continues from {old}, not a state of v{version - 1}"
            )
        elif new not in after["states"]:
            problems.append(f"{name} v{version} continues {old} in {new}, not one of its states")
    for state in waiting:
        target = mapping.get(state, state)
        if target not in after["states"] and state not in mapping:
            problems.append(
                f"{name} v{version} strands state {state} of v{version - 1}: keep the state, or "
                f"say where its sagas continue with machine.continues({{{state!r}: ...}})"
            )
        elif (state == before["compensating"]) != (target == after["compensating"]):
            problems.append(
                f"{name} v{version} continues {state} of v{version - 1} in {target}: only the "
                "compensating state continues in the compensating state"
            )
    return problems


def newest_loaded(
    machines: Iterable[Machine[Any, Any]], snapshots: Mapping[tuple[str, int], Snapshot]
) -> list[str]:
    """A snapshot newer than every loaded version of its workflow means code went missing."""
    loaded: dict[str, int] = {}
    for machine in machines:
        loaded[machine.name] = max(loaded.get(machine.name, 0), machine.version)
    problems = []
    for (workflow, version), _ in sorted(snapshots.items()):
        if workflow in loaded and version > loaded[workflow]:
            problems.append(
                f"{workflow}: snapshot v{version} exists but the newest version loaded is "
                f"v{loaded[workflow]}"
            )
    return problems
