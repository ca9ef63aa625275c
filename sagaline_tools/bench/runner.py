"""One benchmark run: set up the private namespace and database, run the sections in order
with a progress display, and always clean up; returns the figures and the JSON document."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from sagaline.settings import Settings
from sagaline_tools.bench import baseline, e2e, latency, minimal, orchestrator_run, report, timers
from sagaline_tools.bench.config import BenchConfig
from sagaline_tools.bench.env import BenchEnv
from sagaline_tools.bench.machine import local_machine
from sagaline_tools.bench.progress import Step


@dataclass
class Outcome:
    figures: list[report.Figure]
    document: dict[str, Any]
    cleanup_problems: list[str] = field(default_factory=list)
    log_dir: Path | None = None


class SectionStep:
    """A rich progress task that a section drives through its phases."""

    def __init__(self, progress: Progress, task: TaskID, name: str) -> None:
        self.progress = progress
        self.task = task
        self.name = name

    def phase(self, text: str, total: int | None = None) -> None:
        self.progress.update(
            self.task, description=f"{self.name}: {text}", total=total, completed=0
        )
        console = self.progress.console
        if not console.is_terminal:
            # No live display in a file or a CI log: one line per phase instead, so a long
            # run still says where it is.
            size = f" ({total:,})" if total else ""
            console.print(f"{time.strftime('%H:%M:%S')} {self.name}: {text}{size}", highlight=False)

    def update(self, completed: int) -> None:
        self.progress.update(self.task, completed=completed)


def progress_display(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=4,  # the box being measured has two cores: stay out of the way
    )


async def describe_servers(env: BenchEnv) -> dict[str, Any]:
    """RabbitMQ and PostgreSQL versions and the PostgreSQL settings that move the figures."""
    import asyncpg

    from sagaline_tools.bench import amqp
    from sagaline_tools.bench.env import asyncpg_dsn

    info: dict[str, Any] = {}
    connection = await amqp.connect(env.base.amqp_url)
    try:
        info["rabbitmq"] = amqp.server_version(connection)
    finally:
        await connection.close()
    conn = await asyncpg.connect(asyncpg_dsn(env.base.database_url, "postgres"))
    try:
        info["postgresql"] = await conn.fetchval("SHOW server_version")
        info["postgresql_settings"] = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
        }
    finally:
        await conn.close()
    return info


Section = Callable[[BenchEnv, BenchConfig, Step], Awaitable[Any]]
"""Each section measures on its own: none takes a figure from another (the latency rounds
measure the orchestrator alone themselves)."""


def _sections() -> dict[str, Section]:
    return {
        "baseline": baseline.run,
        "minimal": minimal.run,
        "orchestrator": orchestrator_run.run,
        "e2e": e2e.run,
        "latency": latency.run,
        "scale": orchestrator_run.run_scaled,
        "timers": timers.run,
    }


def headline(name: str, result: dict[str, Any]) -> str:
    keys = {
        "baseline": ("msgs_per_s", "msgs/s"),
        "minimal": ("transitions_per_s", "transitions/s"),
        "orchestrator": ("transitions_per_s", "transitions/s"),
        "e2e": ("sagas_per_s", "sagas/s"),
        "latency": ("p99_ms", "ms p99"),
        "scale": ("transitions_per_s", "transitions/s"),
        "timers": ("seconds", "s"),
    }
    key, unit = keys[name]
    return f"{report.format_value(result.get(key))} {unit}"


@contextlib.contextmanager
def _terminate_cancels_main() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C does: the main task is cancelled, cleanup runs."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    installed = False
    if task is not None:
        try:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
            installed = True
        except (NotImplementedError, RuntimeError):
            pass
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


async def run(
    base: Settings,
    config: BenchConfig,
    *,
    console: Console,
    log_dir: Path,
    debug: bool = False,
) -> Outcome:
    run_id = uuid.uuid4().hex[:8]
    env = BenchEnv(
        base,
        run_id,
        log_dir,
        process_env=config.process_env,
        database_settings=config.database_settings,
        random_ids=config.random_ids,
    )
    started_at = datetime.now(UTC).isoformat()
    machine = local_machine()
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    sections = _sections()
    problems: list[str] = []
    with _terminate_cancels_main():
        try:
            async with asyncio.timeout(60):
                machine.update(await describe_servers(env))
            console.print(
                f"bench run {run_id}: namespace {env.namespace}, database {env.database}, "
                f"logs {log_dir}"
            )
            async with asyncio.timeout(600):
                await env.create()
            with progress_display(console) as progress:
                tasks = {
                    name: progress.add_task(f"{name}: waiting", total=None)
                    for name in config.sections
                }
                for name in config.sections:
                    step = SectionStep(progress, tasks[name], name)
                    began = time.monotonic()
                    try:
                        async with asyncio.timeout(config.section_limit):
                            results[name] = await sections[name](env, config, step)
                        results[name]["wall_seconds"] = round(time.monotonic() - began, 1)
                        progress.update(
                            tasks[name],
                            description=f"{name}: {headline(name, results[name])}",
                            total=1,
                            completed=1,
                        )
                    except Exception as exc:
                        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                        if isinstance(exc, TimeoutError) and not str(exc):
                            message = f"took over {config.section_limit:g} s"
                        errors[name] = message
                        if debug:
                            traceback.print_exc(file=sys.stderr)
                        progress.update(tasks[name], description=f"{name}: [red]failed[/]")
                        console.print(f"[red]{name} failed:[/] {message}", highlight=False)
                        await env.stop_all()
        finally:
            problems = await env.destroy(config.keep)
    figs = report.figures(results, errors)
    document = report.document(
        figs=figs,
        results=results,
        errors=errors,
        machine=machine,
        config={**asdict(config), "sections": list(config.sections), "run_id": run_id},
        command=["sagaline", *sys.argv[1:]],
        started_at=started_at,
        finished_at=datetime.now(UTC).isoformat(),
    )
    return Outcome(figs, document, problems, log_dir)
