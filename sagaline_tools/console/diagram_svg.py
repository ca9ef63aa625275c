"""A workflow's state diagram as SVG, drawn on the server (no script, no CDN), from the same
transitions `sagaline diagram` draws (orchestrator.engine.diagram.transitions).

Layout: states in columns by their distance from the start, in the order they are first
reached; final states in the last column. Each arrow carries its triggers as a tooltip.
"""

from __future__ import annotations

from collections import defaultdict, deque
from html import escape
from typing import Any

from orchestrator.engine.diagram import transitions
from orchestrator.engine.machine import Machine

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 34, 60, 18, 14


def svg(machine: Machine[Any, Any], highlight: str | None = None) -> str:
    edges = transitions(machine)
    final = set(machine.final)
    layer: dict[str, int] = {}
    order: list[str] = []
    queue: deque[str] = deque()
    for (source, target), _ in sorted(edges.items(), key=lambda e: (e[0][0] or "", e[0][1])):
        if source is None and target not in layer:
            layer[target] = 0
            order.append(target)
            queue.append(target)
    outgoing: dict[str, list[str]] = defaultdict(list)
    for source, target in sorted(edges, key=lambda e: (e[0] or "", e[1])):
        if source is not None:
            outgoing[source].append(target)
    while queue:
        state = queue.popleft()
        for target in outgoing[state]:
            if target not in layer:
                layer[target] = layer[state] + 1
                order.append(target)
                queue.append(target)
    states = [s.value for s in machine.states]
    for state in states:
        if state not in layer:
            layer[state] = 0
            order.append(state)
    last = max((layer[s] for s in order if s not in final), default=0) + 1
    for state in final:
        layer[state] = last
    columns: dict[int, list[str]] = defaultdict(list)
    for state in order:
        columns[layer[state]].append(state)
    pos = {
        state: (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
        for col, members in columns.items()
        for row, state in enumerate(members)
    }
    width = PAD * 2 + (last + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max(len(m) for m in columns.values()) * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="diagram" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img" aria-label="state diagram">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"'
        ' fill="#667"/></marker></defs>',
    ]
    for (source, target), triggers in sorted(edges.items(), key=lambda e: (e[0][0] or "", e[0][1])):
        if source is None:
            continue
        (x1, y1), (x2, y2) = pos[source], pos[target]
        sx, sy = x1 + BOX_W, y1 + BOX_H / 2
        tx, ty = (
            (x2, y2 + BOX_H / 2) if x2 > x1 else (x2 + BOX_W / 2, y2 + (0 if y2 > y1 else BOX_H))
        )
        bend = (sx + tx) / 2
        parts.append(
            f'<path class="edge" d="M{sx},{sy} C{bend},{sy} {bend},{ty} {tx},{ty}"'
            f' marker-end="url(#arrow)"><title>{escape(source)} → {escape(target)}: '
            f"{escape(' / '.join(triggers))}</title></path>"
        )
    for state, (x, y) in pos.items():
        classes = ["state"]
        if state in final:
            classes.append("final")
        if state == highlight:
            classes.append("current")
        rounded = BOX_H / 2 if state in final else 6
        parts.append(
            f'<g class="{" ".join(classes)}" data-state="{escape(state)}">'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="{rounded}"/>'
            f'<text x="{x + BOX_W / 2}" y="{y + BOX_H / 2 + 4}" text-anchor="middle">'
            f"{escape(state)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
