"""`sagaline dlq replay --rate N` and `dlq jobs`: replays as durable, paced, resumable jobs.

The job and its plan live in the database (sagaline_tools.console.replay), so a replay that
was interrupted (Ctrl-C, a lost terminal, a stop on re-failure) goes on with
`sagaline dlq replay --resume JOB`, from the console's replay page too.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sagaline.settings import Settings
from sagaline_tools.cli import common
from sagaline_tools.cli.output import CliError, print_json, stderr, stdout
from sagaline_tools.cli.parking_access import (
    finish,
    open_parking,
    operator_name,
    resolve_queue,
    selection_of,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from sagaline_tools.console.jobs import Job

_UNDEFINED_TABLE = "42P01"


def runner_name() -> str:
    return f"cli:{socket.gethostname()[:40]}:{os.getpid()}"


def replay_job(
    queue: str | None,
    ids: list[str] | None,
    reason: str | None,
    everything: bool,
    dry_run: bool,
    rate: float | None,
    stop_on_failure: bool,
    resume: int | None,
    note: str | None,
    by: str | None,
    json_output: bool,
) -> None:
    settings = common.load_settings()
    operator = operator_name(by)
    if resume is not None:
        if queue is not None or ids or reason is not None or everything or dry_run:
            raise CliError("--resume takes no queue, selection or --dry-run", exit_code=2)
        job_id = resume
        job = _run_job(settings, job_id, json_output)
    else:
        if queue is None:
            raise CliError("name the parking queue (or --resume a job)", exit_code=2)
        assert rate is not None
        selection = selection_of(ids, reason, everything)
        described = {"ids": sorted(ids or ()), "reason": reason, "all": everything}

        async def plan() -> tuple[str, int | None, list[dict[str, object]]]:
            from sagaline_tools.console.jobs import Item, ReplayJobs
            from sagaline_tools.console.replay import plan_by_scan

            async with open_parking(settings) as parking, database(settings) as engine:
                name = resolve_queue(parking, queue)
                items: list[Item] = await plan_by_scan(parking, name, selection)
                shown: list[dict[str, object]] = [
                    {"message_id": i.message_id, "type": i.message_type, "replays": i.replays}
                    for i in items
                ]
                if dry_run:
                    return name, None, shown
                job = await ReplayJobs(engine).create(
                    name, described, items, rate=rate, stop_on_failure=stop_on_failure,
                    operator=operator, reason=note or "", runner=runner_name(),
                )  # fmt: skip
                return name, job.id, shown

        name, new_id, shown = common.run(plan())
        if new_id is None:
            _print_plan(name, shown, ids, json_output)
            return
        if not json_output:
            stdout().print(
                f"replay job {new_id}: {len(shown)} message(s) from {name} at {rate:g}/s"
                + (", stopping on the first re-failure" if stop_on_failure else "")
            )
        job = _run_job(settings, new_id, json_output)
    _report(job, json_output)


def _print_plan(
    name: str, shown: list[dict[str, object]], ids: list[str] | None, json_output: bool
) -> None:
    from sagaline.messaging.parking import ParkedMessage

    # The same output as a dry run without --rate (ids not parked there: exit 1).
    messages = [
        ParkedMessage(i, str(s["message_id"]) if s["message_id"] else None, None,
                      str(s["type"]) if s["type"] else None, "", None, 0, int(str(s["replays"])),
                      None, None, None, 0)
        for i, s in enumerate(shown)
    ]  # fmt: skip
    finish(name, messages, ids, "would replay", json_output, {"dry_run": True})


def _run_job(settings: Settings, job_id: int, json_output: bool) -> Job:
    from sagaline_tools.console.jobs import JobError, ReplayJobs
    from sagaline_tools.console.replay import ReplayRunner

    progress = _Progress(quiet=json_output)

    async def go() -> Job:
        async with open_parking(settings) as parking, database(settings) as engine:
            runner = ReplayRunner(
                ReplayJobs(engine), parking, runner=runner_name(), on_progress=progress
            )
            try:
                return await runner.run(job_id)
            except JobError as exc:
                raise CliError(str(exc)) from None

    try:
        return common.run(go())
    except CliError as exc:
        if exc.exit_code == 130:
            raise CliError(
                f"interrupted: replay job {job_id} paused; go on with "
                f"`sagaline dlq replay --resume {job_id}`",
                exit_code=130,
            ) from None
        raise
    finally:
        progress.close()


class _Progress:
    """A line on stderr per change of the counts (the console shows the same job live)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last: tuple[int, int, int] | None = None

    def __call__(self, job: Job) -> None:
        counts = (job.replayed, job.refailed, job.gone)
        if self.quiet or counts == self.last:
            return
        self.last = counts
        stderr().print(
            f"  job {job.id}: {job.replayed}/{job.total} replayed"
            + (f", {job.refailed} failed again" if job.refailed else "")
            + (f", {job.gone} gone" if job.gone else ""),
            soft_wrap=True,
        )

    def close(self) -> None:
        pass


def _report(job: Job, json_output: bool) -> None:
    if json_output:
        print_json(job.as_dict())
    else:
        stdout().print(
            f"replay job {job.id} {job.status}: {job.replayed} of {job.total} replayed, "
            f"{job.refailed} failed again, {job.gone} no longer parked"
            + (f" ({escape(job.note)})" if job.note else ""),
            soft_wrap=True,
        )
    if job.status != "done":
        if not json_output:
            stdout().print(f"go on with `sagaline dlq replay --resume {job.id}`")
        raise typer.Exit(1)


def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    pause: Annotated[
        int | None, typer.Option("--pause", metavar="JOB", help="Pause a running job.")
    ] = None,
    stop: Annotated[
        int | None, typer.Option("--stop", metavar="JOB", help="Stop a running job for good.")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="Why (audit trail).")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Operator name (default $USER).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Replay jobs, newest first: progress, status and who started them; --pause or --stop
    one (wherever it runs, the console or a terminal, it halts at its next heartbeat)."""
    from sagaline_tools.console.jobs import JobError, ReplayJobs

    settings = common.load_settings()
    if pause is not None and stop is not None:
        raise CliError("--pause or --stop, not both", exit_code=2)
    if pause is not None or stop is not None:
        op, job_id = ("pause", pause) if pause is not None else ("stop", stop)
        assert job_id is not None
        operator = operator_name(by)

        async def control() -> Job:
            async with database(settings) as engine:
                try:
                    return await ReplayJobs(engine).control(job_id, op, operator, note or "")
                except JobError as exc:
                    raise CliError(str(exc)) from None

        job = common.run(control())
        if json_output:
            print_json(job.as_dict())
        else:
            stdout().print(f"replay job {job.id}: {job.status}")
        return

    async def go() -> list[Job]:
        async with database(settings) as engine:
            return await ReplayJobs(engine).recent(limit)

    jobs = common.run(go())
    if json_output:
        print_json({"jobs": [j.as_dict() for j in jobs]})
        return
    table = Table(title="replay jobs")
    for column in ("job", "queue", "status", "replayed", "failed again", "gone", "rate", "by"):
        table.add_column(column)
    for j in jobs:
        table.add_row(
            str(j.id), escape(j.queue), j.status, f"{j.replayed}/{j.total}", str(j.refailed),
            str(j.gone), f"{j.rate:g}/s", escape(j.created_by),
        )  # fmt: skip
    stdout().print(table)


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    from sqlalchemy.exc import DBAPIError

    from sagaline.db import create_unpooled_engine
    from sagaline_tools.cli.checks import check_database

    if not await check_database(settings, within=15.0):
        raise CliError("the database does not exist yet; run `sagaline migrate`")
    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        yield engine
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _UNDEFINED_TABLE:
            raise CliError("the database has no console tables; run `sagaline migrate`") from None
        raise CliError(f"database error: {type(exc.orig).__name__}") from None
    finally:
        await engine.dispose()
