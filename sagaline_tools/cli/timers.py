"""`sagaline timers …`: list durable timers across sagas, cancel one, reschedule one.

Straight to the database (orchestrator.timer_admin.TimerAdmin), like `sagaline saga`. Cancel
and reschedule write a history entry to the saga with the operator (`--by`, default $USER)
and `--reason`, the same entry the console writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape

from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, print_json
from sagaline_tools.cli.saga import (
    By,
    JsonOption,
    Reason,
    SagaRef,
    _age,
    _console,
    _table,
    _when,
    _who,
    open_admin,
    parse_duration,
)

if TYPE_CHECKING:
    from orchestrator.timer_admin import TimerActionResult, TimerAdmin

T = TypeVar("T")

timers_app = typer.Typer(help="List, cancel and reschedule saga timers.", no_args_is_help=True)

TimerName = Annotated[str, typer.Argument(help="The timer's name (e.g. step-timeout).")]


def register(app: typer.Typer) -> None:
    app.add_typer(timers_app, name="timers")


@timers_app.command("list")
def list_timers(
    due: Annotated[
        bool | None,
        typer.Option("--due/--future", help="Only timers already due, or only future ones."),
    ] = None,
    saga: Annotated[str | None, typer.Option("--saga", help="Only this saga's timers.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only timers of this name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """Timers of every saga, earliest due first."""
    found = _with_timers(lambda t: t.list(due=due, saga=saga, name=name, limit=limit))
    if json_output:
        print_json({"count": len(found), "limit": limit, "timers": [t.as_dict() for t in found]})
        return
    if not found:
        _console().print("no timer matches")
        return
    table = _table("timers (earliest due first)")
    for column in ("saga", "workflow", "business key", "state", "timer", "due", ""):
        table.add_column(column, no_wrap=column != "business key", overflow="fold")
    for t in found:
        when = (
            f"overdue {_age(-t.due_in_seconds)}"
            if t.due_in_seconds <= 0
            else f"in {_age(t.due_in_seconds)}"
        )
        table.add_row(
            str(t.saga_id),
            escape(t.workflow),
            escape(t.business_key),
            t.state,
            escape(t.name),
            _when(t.due_at),
            when,
        )
    console = _console()
    console.print(table)
    if len(found) == limit:
        console.print(f"(first {limit}; raise --limit for more)")


@timers_app.command("cancel")
def cancel(
    saga: SagaRef, name: TimerName, reason: Reason, by: By = None, json_output: JsonOption = False
) -> None:
    """Cancel one timer of a saga: it will not fire (e.g. a step timeout being handled by hand)."""
    operator = _who(by, reason)
    _report(_with_timers(lambda t: t.cancel(saga, name, operator, reason)), json_output)


@timers_app.command("reschedule")
def reschedule(
    saga: SagaRef,
    name: TimerName,
    reason: Reason,
    at: Annotated[
        str | None,
        typer.Option("--at", help="New due time, ISO-8601 with a zone (2026-12-24T18:00:00Z)."),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--in", help="New due time from now (90s, 15m, 2h, 1d).")
    ] = None,
    by: By = None,
    json_output: JsonOption = False,
) -> None:
    """Move one timer of a saga to a new due time (--at, or --in from now). A time in the past
    fires it at the timer loop's next poll."""
    due_at = new_due_time(at, after)
    operator = _who(by, reason)
    _report(_with_timers(lambda t: t.reschedule(saga, name, due_at, operator, reason)), json_output)


def new_due_time(at: str | None, after: str | None, now: datetime | None = None) -> datetime:
    """Exactly one of --at (an absolute time with a zone) or --in (a duration from now)."""
    if (at is None) == (after is None):
        raise CliError("give the new due time with exactly one of --at or --in", exit_code=2)
    if after is not None:
        return (now or datetime.now(UTC)) + parse_duration(after)
    assert at is not None
    try:
        value = datetime.fromisoformat(at.strip())
    except ValueError:
        raise CliError(f"--at {at!r} is not an ISO-8601 time", exit_code=2) from None
    if value.tzinfo is None:
        raise CliError("--at needs a time zone (e.g. 2026-12-24T18:00:00Z)", exit_code=2)
    return value


def _with_timers(work: Callable[[TimerAdmin], Awaitable[T]]) -> T:
    from orchestrator.timer_admin import TimerAdmin

    settings = common.load_settings()

    async def run() -> T:
        async with open_admin(settings) as admin:
            return await work(TimerAdmin(admin))

    return common.run(run())


def _report(result: TimerActionResult, json_output: bool) -> None:
    if json_output:
        print_json(result.as_dict())
        return
    if result.due_at is None:
        what = f"cancelled timer {result.timer} (was due {_when(result.previous_due_at)})"
    else:
        what = (
            f"rescheduled timer {result.timer} from {_when(result.previous_due_at)} "
            f"to {_when(result.due_at)}"
        )
    _console().print(
        f"[green]✓[/] saga {result.saga_id}: {escape(what)} (by {escape(result.operator)})",
        soft_wrap=True,
    )
