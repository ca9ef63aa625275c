"""`sagaline migrate`: create the database if needed, upgrade it to head, print the revision."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sagaline.settings import Settings
from sagaline_tools.cli import common
from sagaline_tools.cli.checks import check_database
from sagaline_tools.cli.output import CliError, one_line, print_json, safe_url, stdout


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)


def migrate(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout.")
    ] = False,
) -> None:
    """Create the database if it is missing and upgrade its schema to the latest revision.

    Safe to run from several replicas at once: an advisory lock serialises them.
    """
    settings = common.load_settings()
    result = common.run(run_migrations(settings))
    if json_output:
        print_json(result)
        return
    before = result["previous_revision"] or "empty"
    after = result["revision"]
    change = "already at head" if before == after else f"upgraded from {before}"
    stdout().print(
        f"[green]✓[/] {result['database']} at revision [bold]{after}[/] ({change})",
        soft_wrap=True,
    )


async def run_migrations(settings: Settings) -> dict[str, Any]:
    """Upgrade to head; return the database (redacted), the revisions before and after."""
    from sagaline.migrate import current_revision, head_revision, upgrade

    exists = await check_database(settings)
    previous = await current_revision(settings) if exists else None
    try:
        await upgrade(settings)
    except Exception as exc:
        # Connection problems were ruled out above: this is the migration itself failing.
        raise CliError(f"migration failed: {type(exc).__name__}: {one_line(exc)}") from None
    revision = await current_revision(settings)
    return {
        "database": safe_url(settings.database_url),
        "previous_revision": previous,
        "revision": revision,
        "head": head_revision(settings),
    }
