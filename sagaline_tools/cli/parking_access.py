"""What the `dlq` commands share: the broker connection, the queue name, the selection,
the operator's name and the result table. Apart from dlq.py so that dlq_jobs.py (replay jobs)
uses them without an import circle."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options
from sagaline_tools.cli import common
from sagaline_tools.cli.checks import EXIT_UNAVAILABLE, _quiet_amqp_logs, check_broker
from sagaline_tools.cli.output import CliError, one_line, print_json, safe_url, stdout, warning_line

if TYPE_CHECKING:
    from sagaline.messaging.parking import ParkedMessage, ParkingQueues, Selection

_CONNECT_TIMEOUT = 15.0


def operator_name(by: str | None) -> str:
    from sagaline_tools.cli.saga import default_operator

    name = (by if by is not None else default_operator()).strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise CliError("operator name must be 1-100 characters without spaces", exit_code=2)
    return name


def selection_of(ids: list[str] | None, reason: str | None, everything: bool) -> Selection:
    """Exactly one way of choosing: ids, a reason, or everything."""
    from sagaline.messaging.parking import Selection

    given = sum((bool(ids), reason is not None, everything))
    if given != 1:
        raise CliError("choose the messages with exactly one of --id, --reason or --all", 2)
    return Selection(ids=frozenset(ids or ()), reason=reason, everything=everything)


def finish(
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


def resolve_queue(parking: ParkingQueues, queue: str) -> str:
    from sagaline.messaging.parking import DlqError

    try:
        return parking.resolve(queue)
    except DlqError as exc:
        raise CliError(str(exc), exit_code=2) from None


def consumers() -> list[str]:
    from contracts.topology import ORCHESTRATOR

    return [ORCHESTRATOR, *common.worker_names()]


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
