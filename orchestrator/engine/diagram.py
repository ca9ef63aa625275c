"""Draw a workflow's state diagram from its definition (Mermaid stateDiagram-v2)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from orchestrator.engine.machine import Machine
from orchestrator.engine.model import is_operator


def _node(state: str) -> str:
    return state.replace("-", "_")


def transitions(machine: Machine[Any, Any]) -> dict[tuple[str | None, str], list[str]]:
    """The moves a diagram draws, (source, target) -> sorted triggers; source None: a start.

    Shared by every drawing (Mermaid here, the console's SVG) so they show the same picture.
    """
    labels: dict[tuple[str | None, str], set[str]] = defaultdict(set)
    for source, trigger, target in machine.edges():
        if source == target or is_operator(trigger):
            # Self-loops (cancel flag, compensation progress) and operator actions, which apply
            # to every unfinished state, would clutter the picture.
            continue
        labels[(source or None, target)].add(trigger)
    return {edge: sorted(triggers) for edge, triggers in labels.items()}


def mermaid(machine: Machine[Any, Any], highlight: str | None = None) -> str:
    """The diagram as Mermaid text; `highlight` marks one state (where a saga instance is)."""
    lines = ["stateDiagram-v2"]
    drawn = {
        (_node(source) if source else "[*]", _node(target)): triggers
        for (source, target), triggers in transitions(machine).items()
    }
    for (source, target), triggers in sorted(drawn.items()):
        lines.append(f"    {source} --> {target}: {' / '.join(triggers)}")
    for state in sorted(machine.final):
        lines.append(f"    {_node(state)} --> [*]")
    if highlight is not None:
        lines.append("    classDef current fill:#f96,stroke:#333,stroke-width:3px")
        lines.append(f"    class {_node(highlight)} current")
    return "\n".join(lines) + "\n"
