"""`sagaline saga …`: look at sagas, find stuck ones, and move them on an operator's word.

Reads and actions go straight to the database (orchestrator.admin.SagaAdmin); the orchestrator
need not be running. Every action is recorded in the saga's history with the operator's name
(`--by`, default $USER) and `--reason`.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sagaline.settings import Settings
from sagaline_tools.cli import common
from sagaline_tools.cli.checks import check_database
from sagaline_tools.cli.output import CliError, print_json, stdout

if TYPE_CHECKING:
    from orchestrator.admin import ActionResult, SagaAdmin, SagaView

T = TypeVar("T")

saga_app = typer.Typer(help="Inspect sagas and move stuck ones on.", no_args_is_help=True)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNDEFINED_TABLE = "42P01"
_PIPE_WIDTH = 160
_CONNECT_TIMEOUT = 15.0

SagaRef = Annotated[str, typer.Argument(help="Saga id, or the business key (e.g. order id).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Reason = Annotated[
    str, typer.Option("--reason", help="Why; recorded in the saga's history (required).")
]
By = Annotated[
    str | None, typer.Option("--by", help="Operator name for the history (default: $USER).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(saga_app, name="saga")


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `1d`, `1w`, or a sum such as `1h30m`."""
    value = text.strip().lower()
    if not value or _DURATION.sub("", value):
        raise typer.BadParameter(
            f"{text!r} is not a duration: use a number with s, m, h, d or w (90s, 15m, 2h, 1d)"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(value))
    if seconds <= 0:
        raise typer.BadParameter("the duration must be longer than zero")
    return timedelta(seconds=seconds)


def _who(by: str | None, reason: str) -> str:
    """The operator's name, after checking name and reason before anything connects."""
    from orchestrator.admin import InvalidRequest, check_request

    operator = by if by is not None else default_operator()
    try:
        check_request(operator, reason)
    except InvalidRequest as exc:
        raise CliError(str(exc), exit_code=2) from None
    return operator


def default_operator() -> str:
    name = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not name:
        with contextlib.suppress(Exception):  # no passwd entry (some containers)
            name = getpass.getuser()
    if not name:
        raise CliError("no operator name: pass --by NAME", exit_code=2)
    return name


# --- reading ---------------------------------------------------------------------------------


@saga_app.command("show")
def show(saga: SagaRef, json_output: JsonOption = False) -> None:
    """Show one saga: state, data, awaited commands, timers, compensations and history."""
    view = _with_admin(lambda admin: admin.show(saga))
    s = view.summary
    definition = _definition_hash(s.workflow, s.definition_version)
    if json_output:
        print_json({**view.as_dict(), "definition_hash": definition})
        return
    _print_view(view, definition)


@saga_app.command("list")
def list_sagas(
    workflow: Annotated[str | None, typer.Option(help="Only this workflow.")] = None,
    state: Annotated[str | None, typer.Option(help="Only sagas in this state.")] = None,
    stuck_for: Annotated[
        str | None,
        typer.Option(
            "--stuck-for",
            metavar="DURATION",
            help="Unfinished sagas unchanged for at least this long (90s, 15m, 2h, 1d).",
        ),
    ] = None,
    active: Annotated[bool, typer.Option("--active", help="Only unfinished sagas.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """List sagas, most recently changed first (with --stuck-for: longest idle first)."""
    idle = parse_duration(stuck_for) if stuck_for is not None else None
    _check_filters(workflow, state)
    found = _with_admin(
        lambda admin: admin.list(
            workflow=workflow, state=state, stuck_for=idle, active=active, limit=limit
        )
    )
    if json_output:
        print_json({"count": len(found), "limit": limit, "sagas": [s.as_dict() for s in found]})
        return
    if not found:
        _console().print("no saga matches")
        return
    table = _table("stuck sagas" if idle else "sagas")
    for column in ("id", "workflow", "version", "business key", "state", "unchanged for"):
        table.add_column(column, no_wrap=column != "business key", overflow="fold")
    for item in found:
        table.add_row(
            str(item.id),
            escape(item.workflow),
            f"v{item.definition_version}",
            escape(item.business_key),
            item.state + ("" if item.finished_at is None else " (final)"),
            _age(item.idle_seconds),
        )
    console = _console()
    console.print(table)
    if len(found) == limit:
        console.print(f"(first {limit}; raise --limit for more)")


# --- acting ----------------------------------------------------------------------------------


@saga_app.command("retry")
def retry(saga: SagaRef, reason: Reason, by: By = None, json_output: JsonOption = False) -> None:
    """Re-send the command(s) the saga waits for, with the same message ids.

    Workers that already handled a command return their stored reply, so nothing runs twice.
    """
    operator = _who(by, reason)
    _report(_with_admin(lambda admin: admin.retry(saga, operator, reason)), json_output)


@saga_app.command("skip")
def skip(
    saga: SagaRef,
    reason: Reason,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Final state to move to (required outside compensation)."),
    ] = None,
    by: By = None,
    json_output: JsonOption = False,
) -> None:
    """Skip the step in flight (while compensating) or move to a final state (--to).

    While compensating, the pending compensation counts as confirmed and the next one runs.
    Otherwise --to names a final state the current state can reach (e.g. failed).
    """
    operator = _who(by, reason)
    _report(_with_admin(lambda admin: admin.skip(saga, operator, reason, to)), json_output)


@saga_app.command("compensate")
def compensate(
    saga: SagaRef, reason: Reason, by: By = None, json_output: JsonOption = False
) -> None:
    """Undo the saga's completed steps, newest first (refused while a command is in flight)."""
    operator = _who(by, reason)
    _report(_with_admin(lambda admin: admin.compensate(saga, operator, reason)), json_output)


@saga_app.command("abort")
def abort(saga: SagaRef, reason: Reason, by: By = None, json_output: JsonOption = False) -> None:
    """End the saga in `aborted` at once, without compensating anything."""
    operator = _who(by, reason)
    _report(_with_admin(lambda admin: admin.abort(saga, operator, reason)), json_output)


# --- plumbing --------------------------------------------------------------------------------


def _with_admin(work: Callable[[SagaAdmin], Awaitable[T]]) -> T:
    settings = common.load_settings()

    async def run() -> T:
        async with open_admin(settings) as admin:
            return await work(admin)

    return common.run(run())


@contextlib.asynccontextmanager
async def open_admin(settings: Settings) -> AsyncIterator[SagaAdmin]:
    """A SagaAdmin on the configured database; its refusals become one-line CLI errors."""
    from sqlalchemy.exc import DBAPIError

    from orchestrator.admin import InvalidRequest, SagaAdmin
    from orchestrator.app import build_store
    from sagaline.db import create_unpooled_engine
    from sagaline.messaging.errors import ReportableError

    # Generous: a busy database is slow, not absent (refusals still fail at once).
    if not await check_database(settings, within=_CONNECT_TIMEOUT):
        raise CliError("the database does not exist yet; run `sagaline migrate`")
    from sagaline_tools.cli.workflows import configured

    workflows = configured(settings)
    engine = create_unpooled_engine(settings.sqlalchemy_url)
    # Wired as the orchestrator wires its own.
    store = build_store(settings, engine, workflows=workflows)
    try:
        yield SagaAdmin(engine, store)
    except InvalidRequest as exc:
        raise CliError(str(exc), exit_code=2) from None
    except ReportableError as exc:
        raise CliError(str(exc)) from None
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _UNDEFINED_TABLE:
            raise CliError("the database has no saga tables; run `sagaline migrate`") from None
        raise CliError(f"database error: {type(exc.orig).__name__}") from None
    finally:
        await engine.dispose()


def _check_filters(workflow: str | None, state: str | None) -> None:
    from sagaline_tools.cli.workflows import configured

    workflows = configured(common.load_settings())
    if workflow is not None and workflow not in workflows:
        raise CliError(
            f"unknown workflow {workflow!r} (known: {', '.join(sorted(workflows))})", exit_code=2
        )
    if state is None:
        return
    # Every loaded version's states: sagas of an older version are still in theirs.
    machines = [m for m in workflows.machines() if workflow in (None, m.name)]
    states = sorted({s.value for m in machines for s in m.states})
    if state not in states:
        raise CliError(f"unknown state {state!r} (known: {', '.join(states)})", exit_code=2)


def _report(result: ActionResult, json_output: bool) -> None:
    if json_output:
        print_json(result.as_dict())
        return
    console = _console()
    move = (
        f"still {result.to_state}"
        if result.from_state == result.to_state
        else f"{result.from_state} → {result.to_state}"
    )
    console.print(
        f"[green]✓[/] saga {result.saga_id}: {move} ({result.action} by {result.operator})",
        soft_wrap=True,
    )
    verb = "re-sent" if result.action == "retry" else "sent"
    for command in result.commands:
        console.print(f"  {verb} {command['type']} {command['message_id']}", soft_wrap=True)


def _definition_hash(workflow: str, version: int) -> str | None:
    """The hash of the saga's version, when this build loads it."""
    from orchestrator.engine.versioning import definition_hash
    from sagaline_tools.cli.workflows import configured

    machine = configured(common.load_settings()).version(workflow, version)
    return definition_hash(machine) if machine is not None else None


def _print_view(view: SagaView, definition: str | None) -> None:
    console = _console()
    s = view.summary
    head = Table(show_header=False, box=None, title=f"saga {s.id}", title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    final = "" if s.finished_at is None else " (final)"
    loaded = definition or "not loaded by this build"
    for label, value in (
        ("workflow", f"{s.workflow} v{s.definition_version} ({loaded})"),
        ("business key", s.business_key),
        # The row's version counts its changes; the workflow's version is on the line above.
        ("state", f"{s.state}{final}  (change {s.version})"),
        ("reason", view.reason or "-"),
        ("created", _when(s.created_at)),
        ("updated", f"{_when(s.updated_at)}  ({_age(s.idle_seconds)} ago)"),
        ("finished", _when(s.finished_at)),
    ):
        head.add_row(label, escape(value))
    console.print(head)
    if view.outstanding:
        table = _table("waiting for")
        for column in ("command", "message id", "created", "published"):
            table.add_column(column, no_wrap=column == "message id")
        for c in view.outstanding:
            published = _when(c.published_at) if c.published_at else "not yet (queued)"
            table.add_row(escape(c.type or "?"), str(c.message_id), _when(c.created_at), published)
        console.print(table)
    if view.timers:
        table = _table("timers")
        table.add_column("name")
        table.add_column("due")
        for t in view.timers:
            table.add_row(t.name, _when(t.due_at))
        console.print(table)
    if view.compensations:
        table = _table(_compensations_title(view))
        table.add_column("command")
        table.add_column("confirmed by")
        for entry in reversed(view.compensations):
            table.add_row(escape(str(entry["command"])), escape(str(entry["confirmed_by"])))
        console.print(table)
    console.print(_history_table(view))
    console.print("[bold]data[/]")
    console.print_json(json.dumps(view.data, default=str))


def _compensations_title(view: SagaView) -> str:
    """The stack is what *would* be undone; only a compensating saga (or one whose compensation
    failed) has undone or is undoing it. Labelled plainly, a completed order's stack reads as
    if its payment had been refunded."""
    from sagaline_tools.cli.workflows import configured

    s = view.summary
    machine = configured(common.load_settings()).version(s.workflow, s.definition_version)
    compensated = view.compensation_target is not None or (
        machine is not None and s.state in (machine.compensating, machine.compensation_failed)
    )
    if compensated:
        return "compensations (undone from the top)"
    if s.finished_at is not None:
        return f"compensations registered (not run: the saga ended {s.state})"
    return "compensations registered (undone from the top if the saga compensates)"


def _history_table(view: SagaView) -> Table:
    table = _table("history")
    for column in ("at", "trigger", "outcome", "from → to", "sent", "actor", "note"):
        table.add_column(column)
    for e in view.history:
        move = (
            e.to_state if e.from_state in (None, e.to_state) else f"{e.from_state} → {e.to_state}"
        )
        sent = ", ".join(str(c.get("type")) for c in e.commands)
        cells = (e.message_type, e.outcome, move, sent, e.actor, e.note)
        table.add_row(_when(e.at), *(escape(cell) for cell in cells))
    return table


def _console() -> Console:
    """Full ids do not fit 80 columns: off a terminal (a pipe, a file) draw tables wider,
    unless COLUMNS says otherwise."""
    console = stdout()
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(highlight=False, width=_PIPE_WIDTH)


def _table(title: str) -> Table:
    # At least as wide as its title: rich wraps a title to the table's width, and a narrow
    # table (two short columns) would break a long title over lines.
    return Table(
        title=f"[bold]{title}[/]",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        min_width=len(title),
    )


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _age(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
