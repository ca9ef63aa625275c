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
) -> None:
    """Print a workflow's state diagram (Mermaid stateDiagram-v2)."""
    from orchestrator.engine.diagram import mermaid
    from orchestrator.workflows import WORKFLOWS

    machine = WORKFLOWS.get(workflow)
    if machine is None:
        known = ", ".join(sorted(WORKFLOWS))
        raise CliError(f"unknown workflow {workflow!r} (known: {known})", exit_code=2)
    state = None
    saga_id = None
    if saga is not None:
        saga_id, state = _saga_state(saga, workflow)
    text = mermaid(machine, highlight=state)
    if json_output:
        print_json(
            {
                "workflow": workflow,
                "format": output_format.value,
                "saga": saga_id,
                "state": state,
                "diagram": text,
            }
        )
        return
    # Plain print: rich would read Mermaid's "[*]" as markup.
    print(text, end="")


def _saga_state(ref: str, workflow: str) -> tuple[str, str]:
    from sagaline_tools.cli.saga import open_admin

    settings = common.load_settings()

    async def look() -> tuple[str, str, str]:
        async with open_admin(settings) as admin:
            view = await admin.show(ref)
        s = view.summary
        return str(s.id), s.workflow, s.state

    saga_id, owner, state = common.run(look())
    if owner != workflow:
        raise CliError(f"saga {saga_id} belongs to workflow {owner}, not {workflow}", exit_code=2)
    return saga_id, state
