"""The `sagaline` command line.

Each command lives in its own module with a `register(app)` function; adding a command means
adding a module and one entry to `_COMMANDS`. Modules import heavy dependencies (broker,
database, orchestrator) inside their functions so that `sagaline --help` stays fast and works
even when a part of the system is broken.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer

# typer vendors click; its exception classes are only reachable through this private module.
from typer._click.exceptions import Abort, ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from sagaline_tools.cli import (
    approvals,
    bench,
    console,
    demo,
    diagram,
    dlq,
    migrate,
    operator,
    saga,
    saga_versions,
    timers,
    up,
    workflows,
)
from sagaline_tools.cli import contracts as contracts_command
from sagaline_tools.cli.output import CliError, error_line, one_line

_COMMANDS = (
    migrate,
    up,
    demo,
    dlq,
    saga,
    saga_versions,
    timers,
    diagram,
    approvals,
    bench,
    contracts_command,
    console,
    operator,
    workflows,
)

DEBUG_ENV = "SAGALINE_DEBUG"
"""Set to 1 to let unexpected errors show their traceback (for bug reports)."""


class SagalineGroup(TyperGroup):
    """The root group: every failure ends as one red line on stderr and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(
                args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra
            )
        try:
            result = super().main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )
        except NoArgsIsHelpError as exc:
            exc.show()  # the help text itself, not an error line
            sys.exit(exc.exit_code)
        except ClickException as exc:
            hint = ""
            if isinstance(exc, UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            error_line(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except Abort:
            error_line("aborted")
            sys.exit(1)
        except CliError as exc:
            error_line(exc.message)
            sys.exit(exc.exit_code)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            error_line(
                f"unexpected error: {type(exc).__name__}: {one_line(exc)} "
                f"(set {DEBUG_ENV}=1 for a traceback)"
            )
            sys.exit(1)
        # Without standalone mode click returns the exit code of a typer.Exit as the result.
        sys.exit(result if isinstance(result, int) else 0)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"sagaline {version('sagaline')}")
        except PackageNotFoundError:
            typer.echo("sagaline (not installed)")
        raise typer.Exit()


app = typer.Typer(
    cls=SagalineGroup,
    name="sagaline",
    help="sagaline: a saga orchestrator for RabbitMQ and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """sagaline: a saga orchestrator for RabbitMQ and PostgreSQL."""


for _command in _COMMANDS:
    _command.register(app)


def main() -> None:
    app()
