"""`sagaline demo enrollment` and `sagaline demo documents`: the other two workflows running."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import RenderableType

from sagaline_tools.cli import common, demo_tables
from sagaline_tools.cli.checks import check_broker, check_database
from sagaline_tools.cli.output import CliError, print_json, stderr, stdout


def register(demo_app: typer.Typer) -> None:
    demo_app.command("enrollment")(enrollment)
    demo_app.command("documents")(documents)


TimeoutOption = Annotated[
    float, typer.Option(min=1.0, help="Seconds to wait for every saga to reach a final state.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]


def enrollment(
    racers: Annotated[
        int, typer.Option(min=1, max=1000, help="Users racing for the course's seats.")
    ] = 20,
    seats: Annotated[int, typer.Option(min=1, max=1000, help="Seats in the course.")] = 5,
    timeout: TimeoutOption = 120.0,
    json_output: JsonOption = False,
) -> None:
    """Users race for a course's few seats; shows that seats are never over-sold."""
    from sagaline_tools.demos import enrollment as demo

    settings = common.load_settings()
    scenario = demo.build_scenario(_tag(), racers=racers, seats=seats)
    result = common.run(
        _checked(settings, demo.run(settings, scenario, wait_seconds=timeout, on_step=_step))
    )
    _finish(result.summary(), result.ok, json_output, lambda: demo_tables.enrollment_view(result))


def documents(
    rounds: Annotated[int, typer.Option(min=1, max=100, help="Rounds of sample documents.")] = 1,
    timeout: TimeoutOption = 120.0,
    json_output: JsonOption = False,
) -> None:
    """Documents of every tier and confidence band; the demo answers approvals on its own."""
    from sagaline_tools.demos import documents as demo

    settings = common.load_settings()
    scenario = demo.build_scenario(_tag(), rounds=rounds)
    result = common.run(
        _checked(settings, demo.run(settings, scenario, wait_seconds=timeout, on_step=_step))
    )
    _finish(result.summary(), result.ok, json_output, lambda: demo_tables.documents_view(result))


async def _checked(settings: Any, coro: Any) -> Any:
    try:
        await check_broker(settings)
        await check_database(settings)
    except BaseException:
        coro.close()
        raise
    return await coro


def _tag() -> str:
    # The demos put their own "demo-" in front of every id they build from the tag.
    return uuid.uuid4().hex[:8]


def _step(text: str) -> None:
    # Progress goes to stderr so that `--json` keeps stdout machine-readable.
    stderr().print(f"[dim]·[/] {text}", soft_wrap=True)


def _finish(
    summary: dict[str, Any], ok: bool, json_output: bool, view: Callable[[], RenderableType]
) -> None:
    if json_output:
        print_json(summary)
    else:
        stdout().print(view())
    if not ok:
        raise CliError("not every saga reached its expected final state", exit_code=1)
