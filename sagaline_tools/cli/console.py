"""`sagaline console`: the operations console, a web server of its own.

It logs in to PostgreSQL and RabbitMQ with the credentials in DATABASE_URL and AMQP_URL (give
it its own: deploy/postgres/roles.sql `sagaline_console`, make_definitions.py's console user),
keeps the parked-message index, runs replay jobs started from it, and serves the pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, stdout

if TYPE_CHECKING:
    from sagaline.settings import Settings

CONSOLE_ROLE = "sagaline_console"
"""The role deploy/postgres/roles.sql creates for a read-write console (migrations grant it)."""


def register(app: typer.Typer) -> None:
    app.command("console")(console)


def console(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (SAGALINE_CONSOLE_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (SAGALINE_CONSOLE_PORT, 8090).")
    ] = None,
    read_only: Annotated[
        bool | None,
        typer.Option(
            "--read-only/--read-write",
            help="No actions: pages only (SAGALINE_CONSOLE_READ_ONLY); needs no write rights.",
        ),
    ] = None,
) -> None:
    """Serve the operations console: sagas, parked messages, replay jobs, timers, approvals."""
    import uvicorn
    from pydantic import ValidationError

    from sagaline.logs import configure_logging
    from sagaline_tools.console.app import build_app
    from sagaline_tools.console.settings import ConsoleSettings

    settings = common.load_settings()
    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "read_only": read_only}.items()
        if v is not None
    }
    try:
        console_settings = ConsoleSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"SAGALINE_CONSOLE_{str(e['loc'][0]).upper()}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise CliError(f"invalid configuration: {problems}", exit_code=2) from None
    if not console_settings.read_only:
        refuse_without_temporary(settings)
    configure_logging(settings.log_level, service="console")
    mode = "read-only" if console_settings.read_only else "read-write"
    stdout().print(
        f"sagaline console ({mode}) on http://{console_settings.host}:{console_settings.port}/"
    )
    uvicorn.run(
        build_app(settings, console_settings),
        host=console_settings.host,
        port=console_settings.port,
        log_level="warning",
        access_log=False,
    )


def refuse_without_temporary(settings: Settings) -> None:
    """A read-write console's actions are saga steps, written by a function in the session's
    temporary schema: without TEMPORARY every action would fail, so say so before serving.
    A database that does not answer yet is left to /readyz, as for every other page."""
    import asyncio

    import asyncpg

    from sagaline.migrate import may_create_temporary, temporary_refused

    try:
        allowed, user, database = asyncio.run(may_create_temporary(settings))
    except (OSError, asyncpg.PostgresError):
        return
    if not allowed:
        problem = temporary_refused(user, database, CONSOLE_ROLE)
        raise CliError(f"console (read-write): {problem}; or start it --read-only", exit_code=3)
