"""How `sagaline demo enrollment` and `sagaline demo documents` show their results: one row per
group of sagas (expected final states against those reached), like `sagaline demo order`.

Counts, not one verdict per saga: which racers win the enrollment race is up to the race, only
how many may win is predicted, so a row compares the tally of final states with the expected one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from sagaline_tools.demos import documents, enrollment

K = TypeVar("K")
T = TypeVar("T")


@dataclass(frozen=True)
class OutcomeRow:
    label: str
    expected: Mapping[str, int]
    """How many of the row's sagas should end in each final state."""
    reached: Mapping[str, int]
    """How many did (final states only)."""
    pending: int
    detail: str = ""


def outcome_table(title: str, what: str, rows: Iterable[OutcomeRow], detail: str = "") -> Table:
    table = Table(title=title)
    table.add_column(what, no_wrap=True)
    if detail:
        table.add_column(detail)
    table.add_column("count", justify="right")
    table.add_column("expected")
    table.add_column("reached")
    table.add_column("pending", justify="right", style="yellow")
    for row in rows:
        style = "green" if dict(row.reached) == dict(row.expected) else "red"
        if row.pending:
            style = "yellow"
        cells = [escape(row.label), *([escape(row.detail)] if detail else [])]
        table.add_row(
            *cells,
            str(sum(row.reached.values()) + row.pending),
            _tally(row.expected),
            f"[{style}]{_tally(row.reached) or '-'}[/]",
            str(row.pending),
        )
    return table


def enrollment_view(result: enrollment.DemoResult) -> RenderableType:
    from sagaline_tools.demos.enrollment import FINAL_STATES, NO_SAGA
    from sagaline_tools.demos.enrollment import Group as RequestGroup

    scenario = result.scenario
    # A duplicate's correlation id never names a saga: "no saga" is its final outcome.
    final = FINAL_STATES | {NO_SAGA}
    rows = [
        _row(
            group.value,
            scenario.expected_counts.get(group, {}),
            [result.states.get(r.saga_id, NO_SAGA) for r in items],
            final,
        )
        for group, items in _grouped(RequestGroup, scenario.requests, lambda r: r.group)
    ]
    title = f"demo enrollment — {result.elapsed:.1f}s"
    return Group(outcome_table(title, "group", rows), _seats_table(result), *_verdict(result))


def documents_view(result: documents.DemoResult) -> RenderableType:
    from sagaline_tools.demos.documents import FINAL_STATES, Kind

    rows = [
        _row(
            kind.value,
            Counter(d.expected_state for d in items),
            [result.states.get(d.saga_id) for d in items],
            FINAL_STATES,
            ", ".join(items[0].roles) or "none (auto)",
        )
        for kind, items in _grouped(Kind, result.scenario.documents, lambda d: d.kind)
    ]
    title = f"demo documents — {result.elapsed:.1f}s, {result.answers} approval answers"
    table = outcome_table(title, "document", rows, detail="approvals asked")
    return Group(table, *_verdict(result))


def _grouped(
    keys: Iterable[K], items: Sequence[T], key_of: Callable[[T], K]
) -> Iterator[tuple[K, list[T]]]:
    """The items of each key, in the keys' order; keys without items are left out."""
    for key in keys:
        chosen = [item for item in items if key_of(item) is key]
        if chosen:
            yield key, chosen


def _row(
    label: str,
    expected: Mapping[str, int],
    states: Sequence[str | None],
    final: frozenset[str],
    detail: str = "",
) -> OutcomeRow:
    reached = Counter(s for s in states if s in final)
    return OutcomeRow(label, expected, reached, len(states) - reached.total(), detail)


def _seats_table(result: enrollment.DemoResult) -> Table:
    table = Table(title="seats taken")
    table.add_column("course", no_wrap=True)
    table.add_column("capacity", justify="right")
    table.add_column("taken", justify="right")
    table.add_column("expected", justify="right")
    for course in result.scenario.courses:
        taken = result.seats.get(course.course_id)
        expected = result.scenario.expected_seats.get(course.course_id)
        style = "green" if taken == expected else "red"
        table.add_row(
            escape(course.course_id),
            str(course.capacity),
            f"[{style}]{'-' if taken is None else taken}[/]",
            str(expected),
        )
    return table


def _verdict(result: enrollment.DemoResult | documents.DemoResult) -> list[str]:
    """Problems one per line (ids whole, ready to copy), then one line that sums it up."""
    lines = [f"  {escape(problem)}" for problem in result.problems]
    sagas = len(result.states)
    if result.timed_out:
        lines.append(f"[red]✗[/] timed out after {result.elapsed:.1f}s ({sagas} sagas seen)")
    elif result.problems:
        lines.append(f"[red]✗[/] {len(result.problems)} outcome(s) differ from the prediction")
    else:
        lines.append(f"[green]✓[/] every saga ended as predicted in {result.elapsed:.1f}s")
    return lines


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(counts.items()) if n)
