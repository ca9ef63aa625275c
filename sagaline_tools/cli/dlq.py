"""`sagaline dlq …`: look at parked (dead-lettered) messages, replay them, or purge them.

Built on sagaline.messaging.parking.ParkingQueues. Looking is non-destructive (messages are
taken without acknowledgement and return in order). A replay sends a copy to the queue the
message came from, with the same message id, so a consumer that already handled it answers from
its inbox.
Purging deletes for good, so it asks first (or needs --yes).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options
from sagaline_tools.cli import common
from sagaline_tools.cli.checks import EXIT_UNAVAILABLE, _quiet_amqp_logs, check_broker
from sagaline_tools.cli.output import CliError, one_line, print_json, safe_url, stdout, warning_line

if TYPE_CHECKING:
    from sagaline.messaging.parking import ParkedMessage, ParkingQueues, Selection

T = TypeVar("T")

_CONNECT_TIMEOUT = 15.0

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


def register(app: typer.Typer) -> None:
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
        name = _resolve(parking, queue)
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
    queue: Queue,
    ids: Ids = None,
    reason: ReasonFilter = None,
    everything: Everything = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be replayed.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Send parked messages back to the queue they came from (same message ids)."""
    selection = selection_of(ids, reason, everything)

    async def go(parking: ParkingQueues) -> tuple[str, list[ParkedMessage]]:
        name = _resolve(parking, queue)
        return name, await parking.replay(name, selection, dry_run=dry_run)

    name, chosen = _with_parking(go)
    verb = "would replay" if dry_run else "replayed"
    _finish(name, chosen, ids, verb, json_output, {"dry_run": dry_run})


@dlq_app.command("purge")
def purge(
    queue: Queue,
    ids: Ids = None,
    reason: ReasonFilter = None,
    everything: Everything = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Delete parked messages for good (asks first unless --yes)."""
    selection = selection_of(ids, reason, everything)
    if not yes and not stdin_is_terminal():
        raise CliError(
            "purge deletes messages for good: pass --yes to confirm (no terminal to ask on)",
            exit_code=2,
        )

    async def go(parking: ParkingQueues) -> tuple[str, list[ParkedMessage]]:
        from sagaline.messaging.parking import SCAN_LIMIT

        name = _resolve(parking, queue)
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
    _finish(name, removed, ids, "purged", json_output, {})


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def selection_of(ids: list[str] | None, reason: str | None, everything: bool) -> Selection:
    """Exactly one way of choosing: ids, a reason, or everything."""
    from sagaline.messaging.parking import Selection

    given = sum((bool(ids), reason is not None, everything))
    if given != 1:
        raise CliError("choose the messages with exactly one of --id, --reason or --all", 2)
    return Selection(ids=frozenset(ids or ()), reason=reason, everything=everything)


def _finish(
    queue: str,
    messages: list[ParkedMessage],
    ids: list[str] | None,
    verb: str,
    json_output: bool,
    extra: dict[str, Any],
) -> None:
    missing = sorted(set(ids or ()) - {m.message_id for m in messages})
    if json_output:
        print_json(
            {
                "queue": queue,
                **extra,
                "count": len(messages),
                "not_found": missing,
                "messages": [m.as_dict() for m in messages],
            }
        )
    else:
        console = stdout()
        for m in messages:
            target = f" → {m.original_queue}" if verb != "purged" else ""
            line = f"  {m.message_type or '?'} {m.message_id or '-'} ({m.reason}){target}"
            console.print(escape(line), soft_wrap=True)
        console.print(f"{verb} {len(messages)} message(s) from {queue}", soft_wrap=True)
    if missing:
        warning_line(f"not parked in {queue}: {', '.join(missing)}")
        raise typer.Exit(1)


def _resolve(parking: ParkingQueues, queue: str) -> str:
    from sagaline.messaging.parking import DlqError

    try:
        return parking.resolve(queue)
    except DlqError as exc:
        raise CliError(str(exc), exit_code=2) from None


def _short(timestamp: str | None) -> str:
    """ISO-8601 from a header, to the second (the headers are written in UTC)."""
    return "-" if not timestamp else timestamp[:19].replace("T", " ")


def consumers() -> list[str]:
    from contracts.topology import ORCHESTRATOR

    return [ORCHESTRATOR, *common.worker_names()]


def _with_parking(work: Callable[[ParkingQueues], Awaitable[T]]) -> T:
    settings = common.load_settings()

    async def run() -> T:
        async with open_parking(settings) as parking:
            return await work(parking)

    return common.run(run())


@contextlib.asynccontextmanager
async def open_parking(settings: Settings) -> AsyncIterator[ParkingQueues]:
    import aio_pika

    from sagaline.messaging.parking import DlqError, ParkingQueues

    try:
        # One connection, with room for a busy broker; only a failure pays for the check
        # that turns it into one clear line (refused, unknown host, bad login, …).
        with _quiet_amqp_logs():
            connection = await aio_pika.connect(
                settings.amqp_url, timeout=_CONNECT_TIMEOUT, **amqp_connect_options(settings)
            )
    except Exception as exc:
        await check_broker(settings)
        raise CliError(
            f"cannot reach RabbitMQ at {safe_url(settings.amqp_url)}: {one_line(exc)}",
            EXIT_UNAVAILABLE,
        ) from None
    try:
        yield ParkingQueues(
            connection, settings.topology, consumers(), user_id=settings.broker_user
        )
    except DlqError as exc:
        raise CliError(str(exc)) from None
    finally:
        await connection.close()
