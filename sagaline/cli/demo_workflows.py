"""`sagaline demo enrollment` and `sagaline demo documents`: the other two workflows running."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from sagaline.cli import common
from sagaline.cli.checks import check_broker, check_database
from sagaline.cli.output import CliError, print_json, stderr, stdout


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
    from sagaline.demos import enrollment as demo

    settings = common.load_settings()
    scenario = demo.build_scenario(_tag(), racers=racers, seats=seats)
    result = common.run(
        _checked(settings, demo.run(settings, scenario, wait_seconds=timeout, on_step=_step))
    )
    _finish(result.summary(), result.ok, json_output)


def documents(
    rounds: Annotated[int, typer.Option(min=1, max=100, help="Rounds of sample documents.")] = 1,
    timeout: TimeoutOption = 120.0,
    json_output: JsonOption = False,
) -> None:
    """Documents of every tier and confidence band; the demo answers approvals on its own."""
    from sagaline.demos import documents as demo

    settings = common.load_settings()
    scenario = demo.build_scenario(_tag(), rounds=rounds)
    result = common.run(
        _checked(settings, demo.run(settings, scenario, wait_seconds=timeout, on_step=_step))
    )
    _finish(result.summary(), result.ok, json_output)


async def _checked(settings: Any, coro: Any) -> Any:
    try:
        await check_broker(settings)
        await check_database(settings)
    except BaseException:
        coro.close()
        raise
    return await coro


def _tag() -> str:
    return "demo-" + uuid.uuid4().hex[:8]


def _step(text: str) -> None:
    # Progress goes to stderr so that `--json` keeps stdout machine-readable.
    stderr().print(f"[dim]·[/] {text}", soft_wrap=True)


def _finish(summary: dict[str, Any], ok: bool, json_output: bool) -> None:
    if json_output:
        print_json(summary)
    else:
        for key, value in summary.items():
            stdout().print(f"{key}: {value}", soft_wrap=True)
    if not ok:
        raise CliError("not every saga reached its expected final state", exit_code=1)
