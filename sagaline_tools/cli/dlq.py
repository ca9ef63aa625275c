"""`sagaline dlq …`: look at parked (dead-lettered) messages, replay them, or purge them.

Built on sagaline.messaging.parking.ParkingQueues. Looking is non-destructive (messages are
taken without acknowledgement and return in order). A replay sends a copy to the queue the
message came from, with the same message id, so a consumer that already handled it answers from
its inbox.
Purging deletes for good, so it asks first (or needs --yes).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, one_line, print_json, stdout, warning_line
from sagaline_tools.cli.parking_access import (
    finish,
    open_parking,
    operator_name,
    resolve_queue,
    selection_of,
)

if TYPE_CHECKING:
    from sagaline.messaging.parking import ParkedMessage, ParkingQueues

T = TypeVar("T")


dlq_app = typer.Typer(
    help="Inspect, replay and purge parked (dead-lettered) messages.", no_args_is_help=True
)

Queue = Annotated[
    str, typer.Argument(help="Consumer name (orchestrator, payments, …) or parking queue name.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Ids = Annotated[
    list[str] | None,
    typer.Option("--id", metavar="MESSAGE_ID", help="This message (repeat for several)."),
]
ReasonFilter = Annotated[
    str | None, typer.Option("--reason", help="Every message parked for this reason.")
]
Everything = Annotated[bool, typer.Option("--all", help="Every message in the queue.")]
Note = Annotated[
    str | None,
    typer.Option("--note", help="Why; recorded in the audit trail with the operator's name."),
]
By = Annotated[
    str | None, typer.Option("--by", help="Operator name for the audit trail (default: $USER).")
]


def register(app: typer.Typer) -> None:
    from sagaline_tools.cli import dlq_jobs

    dlq_app.command("jobs")(dlq_jobs.list_jobs)
    app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def list_queues(json_output: JsonOption = False) -> None:
    """Parked messages per parking queue, counted by reason."""
    summaries = _with_parking(lambda parking: parking.summaries())
    if json_output:
        print_json(
            {
                "total": sum(s.depth for s in summaries),
                "queues": [s.as_dict() for s in summaries],
            }
        )
        return
    table = Table(title="parking queues")
    table.add_column("queue", no_wrap=True)
    table.add_column("parked", justify="right")
    table.add_column("by reason")
    for s in summaries:
        reasons = ", ".join(f"{reason} {count}" for reason, count in s.reasons.items())
        if s.scanned < s.depth:
            reasons += f" (first {s.scanned} counted)"
        table.add_row(s.queue, str(s.depth), escape(reasons) or "-")
    stdout().print(table)


@dlq_app.command("show")
def show(
    queue: Queue,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Show at most this many.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """The parked messages of one queue, oldest first, without taking them out."""

    async def look(parking: ParkingQueues) -> tuple[str, int, list[ParkedMessage]]:
        name = resolve_queue(parking, queue)
        return name, await parking.depth(name), await parking.peek(name, limit)

    name, depth, messages = _with_parking(look)
    if json_output:
        print_json({"queue": name, "depth": depth, "messages": [m.as_dict() for m in messages]})
        return
    if not messages:
        stdout().print(f"{name}: nothing parked")
        return
    console = stdout()
    console.print(f"[bold]{name}[/]: showing {len(messages)} of {depth} parked, oldest first")
    for m in messages:
        console.print(_card(m))


def _card(m: ParkedMessage) -> Table:
    """One message as label/value rows: full ids stay whole and copyable at any width."""
    card = Table(
        title=f"#{m.position} {escape(m.message_type or '?')} [red]{escape(m.reason)}[/]",
        title_justify="left",
        show_header=False,
        min_width=60,
    )
    card.add_column(style="bold", no_wrap=True)
    card.add_column(overflow="fold")
    for label, value in (
        ("message id", m.message_id or "-"),
        ("correlation id", m.correlation_id or "-"),
        ("original queue", m.original_queue or "?"),
        ("attempts", f"{m.attempts} (replayed {m.replays}x)"),
        ("first failure", _short(m.first_failed_at)),
        ("last failure", _short(m.last_failed_at)),
        ("error", m.error or "-"),
        ("size", f"{m.size} bytes"),
    ):
        card.add_row(label, escape(value))
    return card


@dlq_app.command("replay")
def replay(
    queue: Annotated[
        str | None,
        typer.Argument(help="Consumer name (orchestrator, payments, …) or parking queue name."),
    ] = None,
    ids: Ids = None,
    reason: ReasonFilter = None,
    everything: Everything = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be replayed.")
    ] = False,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            min=0.01,
            help="Replay as a job at this many messages per second: progress is recorded in "
            "the database, Ctrl-C pauses, --resume goes on.",
        ),
    ] = None,
    stop_on_failure: Annotated[
        bool,
        typer.Option(
            "--stop-on-failure", help="With --rate: stop when a replayed one fails again."
        ),
    ] = False,
    resume: Annotated[
        int | None,
        typer.Option("--resume", metavar="JOB", help="Go on with a paused or stopped job."),
    ] = None,
    note: Note = None,
    by: By = None,
    json_output: JsonOption = False,
) -> None:
    """Send parked messages back to the queue they came from (same message ids)."""
    if resume is not None or rate is not None:
        from sagaline_tools.cli.dlq_jobs import replay_job

        replay_job(queue, ids, reason, everything, dry_run, rate, stop_on_failure, resume,
                   note, by, json_output)  # fmt: skip
        return
    if stop_on_failure:
        raise CliError("--stop-on-failure needs --rate (a replay job)", exit_code=2)
    if queue is None:
        raise CliError("name the parking queue (or --resume a job)", exit_code=2)
    selection = selection_of(ids, reason, everything)
    operator = operator_name(by)

    async def go(parking: ParkingQueues) -> tuple[str, list[ParkedMessage]]:
        name = resolve_queue(parking, queue)
        return name, await parking.replay(name, selection, dry_run=dry_run)

    name, chosen = _with_parking(go)
    if not dry_run:
        audit_best_effort(operator, "dlq-replay", name, note, chosen)
    verb = "would replay" if dry_run else "replayed"
    finish(name, chosen, ids, verb, json_output, {"dry_run": dry_run})


@dlq_app.command("purge")
def purge(
    queue: Queue,
    ids: Ids = None,
    reason: ReasonFilter = None,
    everything: Everything = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    note: Note = None,
    by: By = None,
    json_output: JsonOption = False,
) -> None:
    """Delete parked messages for good (asks first unless --yes)."""
    selection = selection_of(ids, reason, everything)
    operator = operator_name(by)
    if not yes and not stdin_is_terminal():
        raise CliError(
            "purge deletes messages for good: pass --yes to confirm (no terminal to ask on)",
            exit_code=2,
        )

    async def go(parking: ParkingQueues) -> tuple[str, list[ParkedMessage]]:
        from sagaline.messaging.parking import SCAN_LIMIT

        name = resolve_queue(parking, queue)
        if not yes:
            matching = [m for m in await parking.peek(name, SCAN_LIMIT) if selection(m)]
            if not matching:
                return name, []
            if not typer.confirm(
                f"Delete {len(matching)} parked message(s) from {name} for good?", default=False
            ):
                raise CliError("purge cancelled; nothing was deleted")
        return name, await parking.purge(name, selection)

    name, removed = _with_parking(go)
    audit_best_effort(operator, "dlq-purge", name, note, removed)
    finish(name, removed, ids, "purged", json_output, {})


def audit_best_effort(
    operator: str, action: str, queue: str, note: str | None, messages: list[ParkedMessage]
) -> None:
    """Record a replay or purge in the console's audit trail (one row per message, with its
    saga) when the database has it; the broker action already happened, so a database that
    cannot be reached is a warning, not a failure."""
    if not messages:
        return
    from sagaline_tools.console.dlq_audit import record_messages

    settings = common.load_settings()
    try:
        common.run(record_messages(settings, operator, action, queue, note or "", messages))
    except Exception as exc:
        warning_line(f"not recorded in the audit trail: {one_line(exc)}")


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _short(timestamp: str | None) -> str:
    """ISO-8601 from a header, to the second (the headers are written in UTC)."""
    return "-" if not timestamp else timestamp[:19].replace("T", " ")


def _with_parking(work: Callable[[ParkingQueues], Awaitable[T]]) -> T:
    settings = common.load_settings()

    async def run() -> T:
        async with open_parking(settings) as parking:
            return await work(parking)

    return common.run(run())
