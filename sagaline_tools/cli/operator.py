"""`sagaline operator …`: the console's accounts (add, list, disable).

Passwords are read from the terminal (asked twice) or, with --password-stdin, from one line of
standard input; only a salted scrypt hash is stored.
"""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, print_json, stdout

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

operator_app = typer.Typer(help="Operator accounts of the console.", no_args_is_help=True)


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


def register(app: typer.Typer) -> None:
    app.add_typer(operator_app, name="operator")


@operator_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[Role, typer.Option("--role", help="viewer, operator or admin.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Change an existing operator's role and password.")
    ] = False,
) -> None:
    """Add an operator (viewer reads; operator replays, retries, skips, moves timers; admin
    also purges, aborts and replays in bulk)."""
    from sagaline_tools.console.accounts import AccountError, Accounts, check_name
    from sagaline_tools.console.passwords import MIN_LENGTH

    try:
        check_name(name)
    except AccountError as exc:
        raise CliError(str(exc), exit_code=2) from None
    password = _read_password(password_stdin)
    if len(password) < MIN_LENGTH:
        raise CliError(f"the password must have at least {MIN_LENGTH} characters", exit_code=2)

    async def go() -> None:
        async with _engine() as engine:
            await Accounts(engine).add(name, role.value, password, replace=replace)

    try:
        common.run(go())
    except AccountError as exc:
        raise CliError(str(exc)) from None
    stdout().print(f"[green]✓[/] operator {name} ({role.value})")


@operator_app.command("list")
def list_operators(
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The console's operators and their roles."""
    from sagaline_tools.console.accounts import Accounts

    async def go() -> list[tuple[str, str, bool]]:
        async with _engine() as engine:
            return await Accounts(engine).roster()

    found = common.run(go())
    if json_output:
        print_json([{"name": n, "role": r, "enabled": e} for n, r, e in found])
        return
    table = Table(title="operators")
    for column in ("name", "role", "enabled"):
        table.add_column(column)
    for n, r, e in found:
        table.add_row(n, r, "yes" if e else "no (disabled)")
    stdout().print(table)


@operator_app.command("disable")
def disable(name: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Disable an operator and end their sessions."""
    from sagaline_tools.console.accounts import AccountError, Accounts

    async def go() -> None:
        async with _engine() as engine:
            await Accounts(engine).disable(name)

    try:
        common.run(go())
    except AccountError as exc:
        raise CliError(str(exc)) from None
    stdout().print(f"[green]✓[/] operator {name} disabled")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask the password on: pass --password-stdin", exit_code=2)
    first = typer.prompt("password", hide_input=True)
    if typer.prompt("again", hide_input=True) != first:
        raise CliError("the passwords differ", exit_code=2)
    return str(first)


def _engine() -> contextlib.AbstractAsyncContextManager[AsyncEngine]:
    from sagaline_tools.cli.dlq_jobs import database

    return database(common.load_settings())
