"""`sagaline approve` / `sagaline reject`: answer a document approval as an approvals UI would."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options
from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, print_json, stdout, warning_line


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("reject")(reject)


RoleOption = Annotated[str, typer.Option("--role", help="The approving role, e.g. 'DBA'.")]
ByOption = Annotated[str, typer.Option("--by", help="Who answers (default: $USER).")]
CommentOption = Annotated[str, typer.Option("--comment", help="A comment kept with the answer.")]
ChangeOption = Annotated[
    str | None, typer.Option("--change", help="The change id, when several are open.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def approve(
    document: Annotated[str, typer.Argument(help="The document id.")],
    role: RoleOption,
    by: ByOption = "",
    comment: CommentOption = "",
    change: ChangeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Publish ApprovalGranted for a document's open approval."""
    _answer(document, role, by, comment, change, granted=True, json_output=json_output)


def reject(
    document: Annotated[str, typer.Argument(help="The document id.")],
    role: RoleOption,
    by: ByOption = "",
    comment: CommentOption = "",
    change: ChangeOption = None,
    json_output: JsonOption = False,
) -> None:
    """Publish ApprovalRejected for a document's open approval."""
    _answer(document, role, by, comment, change, granted=False, json_output=json_output)


def _answer(
    document: str,
    role: str,
    by: str,
    comment: str,
    change: str | None,
    *,
    granted: bool,
    json_output: bool,
) -> None:
    settings = common.load_settings()
    approver = by or getpass.getuser()
    result = common.run(_publish(settings, document, role, approver, comment, change, granted))
    if json_output:
        print_json(result)
    else:
        verb = "approved" if granted else "rejected"
        stdout().print(
            f"[green]✓[/] {document}: {verb} as {role} by {approver} (saga {result['saga_id']})",
            soft_wrap=True,
        )


async def _publish(
    settings: Settings,
    document: str,
    role: str,
    approver: str,
    comment: str,
    change: str | None,
    granted: bool,
) -> dict[str, str]:
    import aio_pika

    from orchestrator.documents_lookup import answer_for
    from sagaline.db import create_unpooled_engine
    from sagaline.messaging.errors import ReportableError
    from sagaline.messaging.publish import publish_envelope

    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        try:
            saga, envelope = await answer_for(
                engine,
                document,
                role=role,
                approver=approver,
                comment=comment,
                granted=granted,
                change_id=change,
            )
        except ReportableError as exc:
            raise CliError(str(exc), exit_code=1) from None
        except OSError:
            raise CliError("database unreachable", exit_code=3) from None
    finally:
        await engine.dispose()
    if not saga.accepts_answers:
        warning_line("the saga no longer waits for answers; this one will be recorded and ignored")
    elif role not in saga.pending_roles:
        warning_line(f"role {role} is not awaited; the answer will be recorded and ignored")
    try:
        connection = await aio_pika.connect(settings.amqp_url, **amqp_connect_options(settings))
    except OSError:
        raise CliError("broker unreachable", exit_code=3) from None
    try:
        channel = await connection.channel(publisher_confirms=True)
        await publish_envelope(channel, settings.topology.events_exchange, envelope)
    finally:
        await connection.close()
    return {
        "saga_id": str(envelope.correlation_id),
        "message_id": str(envelope.message_id),
        "type": envelope.type,
    }
