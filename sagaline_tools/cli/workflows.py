"""`sagaline workflows …`: the workflow versions this build loads, and their snapshots.

`snapshot` writes `versions/<workflow>/v<N>.json` for every loaded version that has none (check
the files in, as with migrations); `--check` writes nothing and exits 1 with one line per
problem: a version changed since its snapshot, a version without one, a state stranded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sagaline.settings import Settings
from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, print_json, stdout

if TYPE_CHECKING:
    from orchestrator.engine.registry import Workflows

workflows_app = typer.Typer(help="Workflow versions and their snapshots.", no_args_is_help=True)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        file_okay=False,
        help="Snapshot folder (default: versions/ beside the configured workflows).",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(workflows_app, name="workflows")


def configured(settings: Settings) -> Workflows:
    """The workflows SAGALINE_WORKFLOWS names, as the orchestrator loads them."""
    from orchestrator.workflows.loading import WorkflowsNotFound, load_workflows

    try:
        return load_workflows(settings.workflows)
    except WorkflowsNotFound as exc:
        raise CliError(str(exc), exit_code=2) from None


def _directory(settings: Settings, given: Path | None) -> Path:
    from orchestrator.workflows.loading import WorkflowsNotFound, snapshot_directory

    if given is not None:
        return given
    try:
        return snapshot_directory(settings.workflows)
    except WorkflowsNotFound as exc:
        raise CliError(str(exc), exit_code=2) from None


@workflows_app.command("list")
def list_versions(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Every loaded version of every workflow, with its hash (new sagas start on the newest)."""
    from orchestrator.engine.versioning import definition_hash

    workflows = configured(common.load_settings())
    rows = [
        {
            "workflow": name,
            "version": version,
            "hash": definition_hash(machine),
            "newest": machine is workflows[name],
        }
        for name, loaded in sorted(workflows.versions.items())
        for version, machine in loaded.items()
    ]
    if json_output:
        print_json({"versions": rows})
        return
    table = Table(title="workflow versions loaded", title_justify="left")
    for column in ("workflow", "version", "hash", "new sagas"):
        table.add_column(column)
    for row in rows:
        newest = "start here" if row["newest"] else "-"
        table.add_row(str(row["workflow"]), f"v{row['version']}", str(row["hash"]), newest)
    stdout().print(table)


@workflows_app.command("snapshot")
def snapshot(
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when anything is off.")
    ] = False,
    directory: DirOption = None,
) -> None:
    """Write the snapshot of every loaded version that has none; --check only compares."""
    from orchestrator.workflows import snapshots

    settings = common.load_settings()
    workflows = configured(settings)
    folder = _directory(settings, directory)
    try:
        if check:
            problems = snapshots.check(workflows.machines(), folder)
            if problems:
                raise CliError(f"{len(problems)} problem(s): " + "; ".join(problems))
            stdout().print(
                f"[green]✓[/] every loaded version matches its snapshot in {folder}",
                soft_wrap=True,
            )
            return
        written = snapshots.write(workflows.machines(), folder)
    except snapshots.SnapshotError as exc:
        raise CliError(str(exc)) from None
    console = stdout()
    for path in written:
        console.print(f"wrote {path}", soft_wrap=True)
    if not written:
        console.print(
            f"[green]✓[/] nothing to write: the snapshots in {folder} are current", soft_wrap=True
        )
