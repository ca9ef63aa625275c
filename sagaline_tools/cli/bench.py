"""`sagaline bench`: measure throughput, latency, scale and timers against a same-run baseline.

Everything runs on the configured RabbitMQ and PostgreSQL server but in a private namespace and
a private database created for the run and removed afterwards (`--keep` keeps them), so it
never touches a deployment's own queues or tables.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, stderr, stdout


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


SECTION_HELP = "baseline, minimal, orchestrator, e2e, latency, scale, timers"


def bench(
    only: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated sections to run ({SECTION_HELP}); default all."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny sizes for a smoke run (figures mean little).")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="The sizes the goals are stated for (1M sagas...).")
    ] = False,
    messages: Annotated[
        int | None, typer.Option(min=1, help="Messages the bare relay baseline moves.")
    ] = None,
    orders: Annotated[
        int | None,
        typer.Option(min=1, help="Orders for the minimal, orchestrator and scale sections."),
    ] = None,
    e2e_orders: Annotated[
        str | None,
        typer.Option(
            help="Orders run end to end through real workers, comma-separated for a growth "
            "series (e.g. 2000,10000,30000: one run each from empty tables)."
        ),
    ] = None,
    latency_seconds: Annotated[
        float | None, typer.Option(min=0.5, help="Seconds of steady load for the latency run.")
    ] = None,
    latency_rate: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="Transitions/s to offer in every latency round (default: half of the "
            "orchestrator's rate alone, measured again before each round).",
        ),
    ] = None,
    finished: Annotated[
        int | None, typer.Option(min=0, help="Finished sagas seeded for the scale run.")
    ] = None,
    live: Annotated[
        int | None, typer.Option(min=0, help="Live sagas seeded for the scale run.")
    ] = None,
    timers: Annotated[
        int | None, typer.Option(min=1, help="Sagas whose step-timeout timer is due at start.")
    ] = None,
    seed_history: Annotated[
        bool,
        typer.Option(
            help="Seed history, inbox and outbox rows with the scale run's sagas (4 each per "
            "finished saga), as a system that ran for a while has them."
        ),
    ] = True,
    repeat: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="Rounds of the baseline, orchestrator, latency and scale measurements"
            " (median shown).",
        ),
    ] = 1,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="KEY=VALUE for the measured sagaline processes (repeatable)."),
    ] = None,
    random_ids: Annotated[
        bool,
        typer.Option(
            "--random-ids",
            help="Publish orders with random (version 4) saga and message ids instead of"
            " version 7 ones, as a publisher that ignores the README's advice does.",
        ),
    ] = False,
    db_setting: Annotated[
        list[str] | None,
        typer.Option(
            "--db-setting",
            help="name=value PostgreSQL setting of the run's database, e.g. "
            "plan_cache_mode=force_custom_plan (repeatable).",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Also write the results as JSON here.")
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(help="Keep the run's database, namespace and logs for inspection."),
    ] = False,
    fail_on_goal: Annotated[
        bool, typer.Option(help="Exit 1 when a measured figure misses its goal.")
    ] = False,
) -> None:
    """Measure sagaline on this machine's RabbitMQ and PostgreSQL.

    Sections, in order: the bare aio-pika relay baseline; the minimal hand-written saga step
    (raw asyncpg + aio-pika) with stub workers; the orchestrator alone with stub workers;
    end-to-end order sagas with the real workers; latency at half the orchestrator's rate
    (measured again right before each latency round) against the bare relay's at that rate;
    the orchestrator again with finished and live sagas seeded; and due timers firing on
    start. Prints one table (figure, ratio to its reference, goal, pass/fail, machine) and
    exits 1 if a section failed or a timer did not fire exactly once.
    """
    from sagaline_tools.bench import config as bench_config
    from sagaline_tools.bench import runner

    if quick and full:
        raise CliError("--quick and --full are exclusive", exit_code=2)
    try:
        sizes = bench_config.QUICK if quick else bench_config.FULL if full else bench_config.Sizes()
        overrides = {
            "messages": messages,
            "orders": orders,
            "e2e_orders": bench_config.parse_counts(e2e_orders) if e2e_orders else None,
            "latency_seconds": latency_seconds,
            "finished": finished,
            "live": live,
            "timers": timers,
        }
        sizes = replace(sizes, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        config = bench_config.BenchConfig(
            sizes=sizes,
            sections=bench_config.parse_only(only),
            latency_rate=latency_rate,
            process_env=bench_config.parse_env(env or []),
            random_ids=random_ids,
            database_settings=bench_config.parse_database_settings(db_setting or []),
            keep=keep,
            seed_history=seed_history,
            quick=quick,
            repeat=repeat,
        )
        bench_config.validate(config)
    except bench_config.ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None

    settings = common.load_settings()
    common.run(_preflight(settings))
    log_dir = Path(tempfile.mkdtemp(prefix="sagaline-bench-"))
    try:
        outcome = common.run(
            runner.run(settings, config, console=stderr(), log_dir=log_dir, debug=common_debug())
        )
    except asyncio.CancelledError:  # SIGTERM: the run was cancelled, and has cleaned up
        _drop_logs(log_dir, keep)
        raise CliError("interrupted", exit_code=130) from None
    except CliError:  # Ctrl-C (exit code 130)
        _drop_logs(log_dir, keep)
        raise
    from sagaline_tools.bench import report

    console = stdout()
    if not console.is_terminal:
        console.width = 200  # a file or a CI log: one row per figure rather than 80 columns
    console.print(report.table(outcome.figures, outcome.document["machine"]))
    if json_out is not None:
        json_out.write_text(json.dumps(outcome.document, indent=2, default=str) + "\n")
        stderr().print(f"results written to {json_out}")
    busy = outcome.document["summary"].get("busy_sections") or {}
    if busy:
        worst = ", ".join(f"{name} ({cores:.1f} cores)" for name, cores in busy.items())
        stderr().print(
            f"[yellow]warning:[/] other processes were busy during {worst}: those figures "
            "measure a shared machine, not sagaline; rerun on a quiet one",
            highlight=False,
        )
    for problem in outcome.cleanup_problems:
        stderr().print(f"[yellow]cleanup:[/] {problem}", highlight=False)
    timer_result = outcome.document["results"].get("timers") or {}
    failed = bool(outcome.document["errors"]) or timer_result.get("fired_once") is False
    if failed or keep:
        stderr().print(f"process logs kept in {log_dir}")
    else:
        _drop_logs(log_dir, keep)
    summary = outcome.document["summary"]
    if failed or (fail_on_goal and summary["failed"]):
        raise typer.Exit(1)


def _drop_logs(log_dir: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(log_dir, ignore_errors=True)


def common_debug() -> bool:
    import os

    from sagaline_tools.cli import DEBUG_ENV

    return os.environ.get(DEBUG_ENV) == "1"


async def _preflight(settings: object) -> None:
    """Both servers answer (the private database is created later, so only the server)."""
    from sagaline.settings import Settings
    from sagaline_tools.bench.env import asyncpg_dsn
    from sagaline_tools.cli.checks import check_broker, check_database

    assert isinstance(settings, Settings)
    await check_broker(settings)
    admin = settings.model_copy(
        update={"database_url": asyncpg_dsn(settings.database_url, "postgres")}
    )
    await check_database(admin)
