"""`sagaline saga versions` (the drain report) and `sagaline saga migrate` (move running sagas
to another version of their workflow): orchestrator.migrate_sagas does the work.

`migrate` always surveys first and prints counts per version and per outcome before anything
changes; `--dry-run` stops there. Without a terminal to ask on it needs `--yes`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, print_json
from sagaline_tools.cli.workflows import configured

if TYPE_CHECKING:
    from orchestrator.migrate_sagas import VersionUse
    from orchestrator.migration_checks import MigrationRequest, Report


def register(app: typer.Typer) -> None:
    """Adds `versions` and `migrate` to the `saga` group (registered before it)."""
    from sagaline_tools.cli.saga import saga_app

    saga_app.command("versions")(versions)
    saga_app.command("migrate")(migrate)


def versions(
    workflow: Annotated[str | None, typer.Option(help="Only this workflow.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """How many sagas still run under each workflow version (a drained version can go)."""
    from orchestrator.migrate_sagas import drain_report
    from sagaline_tools.cli.saga import _console, _table, _when, open_admin

    settings = common.load_settings()
    workflows = configured(settings)
    if workflow is not None and workflow not in workflows:
        known = ", ".join(sorted(workflows))
        raise CliError(f"unknown workflow {workflow!r} (known: {known})", exit_code=2)

    async def run() -> list[VersionUse]:
        async with open_admin(settings) as admin:
            return await drain_report(admin.engine, workflows)

    uses = [u for u in common.run(run()) if workflow is None or u.workflow == workflow]
    if json_output:
        print_json({"versions": [u.as_dict() for u in uses]})
        return
    table = _table("running sagas per workflow version")
    for column in ("workflow", "version", "hash", "running", "oldest started", ""):
        table.add_column(column)
    for use in uses:
        table.add_row(
            escape(use.workflow),
            f"v{use.version}",
            use.hash or "-",
            str(use.running),
            _when(use.oldest_started),
            _note(use),
        )
    _console().print(table)


def _note(use: VersionUse) -> str:
    if use.hash is None:
        return "[red]not loaded by this build: its sagas cannot move (deploy it or migrate)[/]"
    if use.newest:
        return "newest: new sagas start here"
    return "drained: can be retired" if use.running == 0 else "still running"


def migrate(
    workflow: Annotated[str, typer.Option("--workflow", help="The workflow (e.g. order).")],
    to: Annotated[int, typer.Option("--to", min=1, help="The version to move sagas to.")],
    maps: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="OLD=NEW",
            help="A saga in state OLD continues in NEW (overrides the version's own mapping).",
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            metavar="COND",
            help="Only sagas with state=S, version=N or key=K (K* for a prefix); repeat to add.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what would happen.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; recorded in each saga's history.")
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Operator name for the history (default: $USER).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Migrate at most this many (a canary).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Sagas per page.")] = 100,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Move running sagas of a workflow to version --to: survey, check, then migrate.

    Each saga is checked (its state exists in the target or is mapped, the commands it awaits,
    its timers and its compensation stack keep their meaning there, its data fits) and moved
    in a transaction of its own, with a history entry (operator, reason, version move).
    """
    from orchestrator.migration_checks import InvalidMigration, plan_request
    from sagaline_tools.cli.saga import _who

    settings = common.load_settings()
    try:
        request = plan_request(configured(settings), workflow, to, maps or (), where or ())
    except InvalidMigration as exc:
        raise CliError(str(exc), exit_code=2) from None
    operator = ""
    if not dry_run:
        if reason is None:
            raise CliError("a reason is required to migrate (--reason)", exit_code=2)
        operator = _who(by, reason)
        if not yes and not json_output and not sys.stdin.isatty():
            raise CliError("pass --yes to migrate (no terminal to ask on)", exit_code=2)
        if json_output and not yes:
            raise CliError("with --json, pass --yes (or --dry-run)", exit_code=2)
    survey, result = common.run(
        _survey_then_migrate(
            request, dry_run, operator, reason or "", limit, batch_size, yes, not json_output
        )
    )
    if json_output:
        print_json(
            {
                "dry_run": dry_run,
                "survey": survey.as_dict(),
                "result": result.as_dict() if result else None,
            }
        )
    if result is not None and result.blocked:
        raise typer.Exit(1)


async def _survey_then_migrate(
    request: MigrationRequest,
    dry_run: bool,
    operator: str,
    reason: str,
    limit: int | None,
    batch_size: int,
    yes: bool,
    talk: bool,
) -> tuple[Report, Report | None]:
    from orchestrator.migrate_sagas import SagaMigrator
    from sagaline_tools.cli.saga import _console, open_admin

    settings = common.load_settings()
    console = _console()
    async with open_admin(settings) as admin:
        migrator = SagaMigrator(admin.engine, clock=admin.store.clock, batch_size=batch_size)
        survey = await migrator.survey(request)
        if talk:
            _print_report(survey, "survey (nothing changed yet)")
        if dry_run:
            if talk:
                console.print("dry run: nothing changed")
            return survey, None
        if survey.migratable == 0:
            if talk:
                console.print("nothing to migrate")
            return survey, None
        if not yes and not typer.confirm(f"migrate up to {survey.migratable} sagas?"):
            raise CliError("aborted: nothing migrated")

        def progress(report: Report) -> None:
            if talk:
                console.print(f"  migrated {report.migrated}, blocked {report.blocked} so far")

        result = await migrator.migrate(request, operator, reason, limit=limit, on_batch=progress)
    if talk:
        for text, count in result.reasons.most_common():
            console.print(f"  [yellow]blocked[/] {count} sagas: {escape(text)}", soft_wrap=True)
        console.print(
            f"[green]✓[/] migrated {result.migrated} saga(s) to {request.workflow} "
            f"v{request.to_version}; {result.blocked} blocked; "
            f"{result.changed_meanwhile} finished or moved meanwhile",
            soft_wrap=True,
        )
    return survey, result


def _print_report(report: Report, title: str) -> None:
    from sagaline_tools.cli.saga import _console, _table

    console = _console()
    console.print(
        f"[bold]{escape(report.workflow)} → v{report.to_version}[/] ({report.to_hash}): {title}",
        soft_wrap=True,
    )
    table = _table("sagas per version and outcome")
    for column in ("from version", "sagas", "migrate", "blocked"):
        table.add_column(column)
    for version, counts in sorted(report.by_version.items()):
        table.add_row(
            f"v{version}", str(counts["sagas"]), str(counts["migrate"]), str(counts["blocked"])
        )
    console.print(table)
    for (version, old, new), count in sorted(report.moves.items()):
        move = f"stays {old}" if old == new else f"{old} → {new}"
        console.print(f"  v{version} {escape(move)}: {count}", soft_wrap=True)
    for text, count in report.reasons.most_common():
        examples = ", ".join(report.examples[text])
        console.print(
            f"  [yellow]blocked[/] {count} sagas: {escape(text)} (e.g. {examples})", soft_wrap=True
        )
    console.print(f"  already on v{report.to_version}: {report.already} running")
