"""`sagaline diagram WORKFLOW`: the workflow's state diagram, drawn from its definition.

With `--saga ID` the state that saga is in is highlighted (read from the database).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, print_json


class Format(StrEnum):
    MERMAID = "mermaid"


def register(app: typer.Typer) -> None:
    app.command("diagram")(diagram)


def diagram(
    workflow: Annotated[str, typer.Argument(help="Workflow name (e.g. order).")],
    output_format: Annotated[
        Format, typer.Option("--format", help="Diagram language.")
    ] = Format.MERMAID,
    saga: Annotated[
        str | None,
        typer.Option("--saga", help="Highlight the state of this saga (id or business key)."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the diagram inside a JSON object.")
    ] = False,
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            min=1,
            help="This version of the workflow (default: the newest, or "
            "the one the --saga runs under).",
        ),
    ] = None,
) -> None:
    """Print a workflow's state diagram (Mermaid stateDiagram-v2)."""
    from orchestrator.engine.diagram import mermaid
    from sagaline_tools.cli.workflows import configured

    workflows = configured(common.load_settings())
    if workflow not in workflows:
        known = ", ".join(sorted(workflows))
        raise CliError(f"unknown workflow {workflow!r} (known: {known})", exit_code=2)
    state = None
    saga_id = None
    if saga is not None:
        saga_id, state, saga_version = _saga_state(saga, workflow)
        version = version or saga_version
    machine = workflows.version(workflow, version) if version else workflows[workflow]
    if machine is None:
        loaded = ", ".join(f"v{v}" for v in workflows.versions[workflow])
        raise CliError(f"{workflow} has no version {version} loaded ({loaded})", exit_code=2)
    text = mermaid(machine, highlight=state)
    if json_output:
        print_json(
            {
                "workflow": workflow,
                "version": machine.version,
                "format": output_format.value,
                "saga": saga_id,
                "state": state,
                "diagram": text,
            }
        )
        return
    # Plain print: rich would read Mermaid's "[*]" as markup.
    print(text, end="")


def _saga_state(ref: str, workflow: str) -> tuple[str, str, int]:
    """The saga's id, state and the workflow version it runs under."""
    from sagaline_tools.cli.saga import open_admin

    settings = common.load_settings()

    async def look() -> tuple[str, str, str, int]:
        async with open_admin(settings) as admin:
            view = await admin.show(ref)
        s = view.summary
        return str(s.id), s.workflow, s.state, s.definition_version

    saga_id, owner, state, version = common.run(look())
    if owner != workflow:
        raise CliError(f"saga {saga_id} belongs to workflow {owner}, not {workflow}", exit_code=2)
    return saga_id, state, version
