"""Replay jobs on the real broker and database: paced, stopped by a re-failure, resumed, and
the CLI's `dlq replay --rate` / `--resume` / `dlq jobs` on top of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.topology import H_REPLAY_COUNT
from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from sagaline_tools.console.jobs import DONE, PAUSED, RUNNING, STOPPED, JobError, ReplayJobs
from sagaline_tools.console.replay import ReplayRunner, plan_by_scan
from sagaline_tools.console.tables import audit, replay_jobs
from tests.integration.console_support import (
    declare,
    depth,
    drain,
    park,
    parking_queues,
    private_namespace,
)
from tests.integration.test_admin import cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
async def ns(settings: Settings) -> AsyncIterator[Settings]:
    async with private_namespace(settings) as own:
        await declare(own)
        yield own


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    value = create_unpooled_engine(settings.sqlalchemy_url)
    yield value
    await value.dispose()


class FakeTime:
    """Monotonic time that moves only when the runner sleeps; `on_sleep` runs at each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0
        self.on_sleep: Callable[[], Awaitable[None]] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        if self.on_sleep is not None:
            await self.on_sleep()


async def make_job(
    ns: Settings, engine: AsyncEngine, *, rate: float, stop_on_failure: bool = False
) -> int:
    queue = ns.topology.parking_queue("payments")
    async with parking_queues(ns) as parking:
        items = await plan_by_scan(parking, queue, lambda m: True)
    job = await ReplayJobs(engine).create(
        queue, {"all": True}, items, rate=rate, stop_on_failure=stop_on_failure,
        operator="ann", reason="payments fixed", runner="test",
    )  # fmt: skip
    return job.id


async def test_a_job_replays_its_plan_at_the_rate_and_records_progress(
    ns: Settings, engine: AsyncEngine
) -> None:
    ids = await park(ns, 6)
    job_id = await make_job(ns, engine, rate=2.0)
    clock = FakeTime()
    seen: list[int] = []
    async with parking_queues(ns) as parking:
        runner = ReplayRunner(
            ReplayJobs(engine), parking, runner="test", monotonic=clock, sleep=clock.sleep,
            on_progress=lambda job: seen.append(job.replayed),
        )  # fmt: skip
        job = await runner.run(job_id)

    assert (job.status, job.total, job.replayed, job.refailed, job.gone) == (DONE, 6, 6, 0, 0)
    # Six messages at 2/s: the last one leaves 2.5 s after the first, not at once.
    assert clock.slept == pytest.approx(2.5, abs=0.01)
    assert seen == sorted(seen) and seen[-1] == 6
    copies = await drain(ns, ns.topology.work_queue("payments"))
    assert sorted(m.message_id or "" for m in copies) == sorted(ids)
    assert {(m.headers or {})[H_REPLAY_COUNT] for m in copies} == {1}
    assert await depth(ns, ns.topology.parking_queue("payments")) == 0
    async with engine.connect() as conn:
        (row,) = (
            await conn.execute(select(audit).where(audit.c.target.like(f"% job {job_id}")))
        ).all()
    assert (row.actor, row.action, row.reason) == (
        "operator:ann",
        "dlq-replay-job",
        "payments fixed",
    )


async def test_a_refailure_stops_the_job_and_resume_never_replays_it_twice(
    ns: Settings, engine: AsyncEngine
) -> None:
    ids = await park(ns, 5)
    job_id = await make_job(ns, engine, rate=1.0, stop_on_failure=True)
    clock = FakeTime()
    jobs = ReplayJobs(engine)

    async def first_one_fails_again() -> None:
        # After two replays the consumer parks the first copy again (replay count 1).
        if (await jobs.get(job_id)).replayed == 2 and not parked_again:
            parked_again.append(True)
            await park(ns, 1, ids=[ids[0]], replays=1)

    parked_again: list[bool] = []
    clock.on_sleep = first_one_fails_again
    async with parking_queues(ns) as parking:
        runner = ReplayRunner(jobs, parking, runner="test", monotonic=clock, sleep=clock.sleep)
        stopped = await runner.run(job_id)
        assert stopped.status == STOPPED
        assert (stopped.replayed, stopped.refailed) == (2, 1)
        assert f"ProcessPayment {ids[0]} failed again (retries-exhausted)" in stopped.note
        resumed = await runner.run(job_id)

    assert (resumed.status, resumed.replayed, resumed.refailed, resumed.gone) == (DONE, 5, 1, 0)
    # The re-parked copy stays parked for the operator: a job never replays a message twice.
    (left,) = await drain(ns, ns.topology.parking_queue("payments"))
    assert (left.message_id, (left.headers or {})[H_REPLAY_COUNT]) == (ids[0], 1)
    assert len(await drain(ns, ns.topology.work_queue("payments"))) == 5


async def test_an_interrupted_job_is_paused_and_a_live_one_is_not_taken_twice(
    ns: Settings, engine: AsyncEngine
) -> None:
    await park(ns, 4)
    job_id = await make_job(ns, engine, rate=1.0)
    jobs = ReplayJobs(engine)
    clock = FakeTime()
    started = asyncio.Event()
    gate = asyncio.Event()

    async def hold() -> None:
        started.set()
        await gate.wait()

    clock.on_sleep = hold
    async with parking_queues(ns) as parking:
        runner = ReplayRunner(jobs, parking, runner="cli-a", monotonic=clock, sleep=clock.sleep)
        task = asyncio.create_task(runner.run(job_id))
        await started.wait()
        assert (await jobs.get(job_id)).status == RUNNING
        with pytest.raises(JobError, match="being run by cli-a right now"):
            await jobs.claim(job_id, "cli-b")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        paused = await jobs.get(job_id)
        assert (paused.status, paused.replayed, paused.note) == (PAUSED, 1, "interrupted")
        assert await depth(ns, ns.topology.parking_queue("payments")) == 3  # nothing lost
        fast = FakeTime()
        other = ReplayRunner(jobs, parking, runner="cli-b", monotonic=fast, sleep=fast.sleep)
        done = await other.run(job_id)
    assert (done.status, done.replayed) == (DONE, 4)
    with pytest.raises(JobError, match="is done; it cannot be resumed"):
        await jobs.claim(job_id, "cli-c")


async def test_cli_rate_replay_dry_run_resume_and_jobs(ns: Settings, engine: AsyncEngine) -> None:
    ids = await park(ns, 3)
    other = await park(ns, 2, reason="schema-invalid")

    dry = await cli(ns, "dlq", "replay", "payments", "--reason", "schema-invalid", "--rate", "5",
                    "--dry-run", "--json")  # fmt: skip
    assert dry.exit_code == 0, dry.stderr
    assert sorted(m["message_id"] for m in json.loads(dry.stdout)["messages"]) == sorted(other)
    assert await depth(ns, ns.topology.parking_queue("payments")) == 5

    ran = await cli(ns, "dlq", "replay", "payments", "--reason", "retries-exhausted", "--rate",
                    "50", "--note", "fixed in 1.4.2", "--by", "bo", "--json")  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    job = json.loads(ran.stdout)
    assert (job["status"], job["replayed"], job["total"], job["created_by"]) == (DONE, 3, 3, "bo")
    copies = await drain(ns, ns.topology.work_queue("payments"))
    assert sorted(m.message_id or "" for m in copies) == sorted(ids)

    again = await cli(ns, "dlq", "replay", "--resume", str(job["id"]))
    assert again.exit_code == 1
    assert again.stderr.strip() == f"error: replay job {job['id']} is done; it cannot be resumed"
    both = await cli(ns, "dlq", "replay", "payments", "--all", "--resume", "1")
    assert both.exit_code == 2 and "--resume takes no queue" in both.stderr
    no_rate = await cli(ns, "dlq", "replay", "payments", "--all", "--stop-on-failure")
    assert no_rate.exit_code == 2 and "--stop-on-failure needs --rate" in no_rate.stderr

    listed = await cli(ns, "dlq", "jobs", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert job["id"] in [j["id"] for j in json.loads(listed.stdout)["jobs"]]


async def test_cli_replay_and_purge_write_audit_rows_per_message(
    ns: Settings, engine: AsyncEngine
) -> None:
    saga_id = uuid.uuid4()
    (one,) = await park(ns, 1, saga_id=saga_id)
    (two,) = await park(ns, 1)
    replayed = await cli(ns, "dlq", "replay", "payments", "--id", one, "--note", "fixed",
                         "--by", "cy")  # fmt: skip
    assert replayed.exit_code == 0, replayed.stderr
    purged = await cli(ns, "dlq", "purge", "payments", "--id", two, "--yes", "--by", "cy")
    assert purged.exit_code == 0, purged.stderr
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(audit)
                .where(audit.c.target.like(f"%{one}%") | audit.c.target.like(f"%{two}%"))
                .order_by(audit.c.id)
            )
        ).all()  # fmt: skip
    assert [(r.actor, r.action, r.reason) for r in rows] == [
        ("operator:cy", "dlq-replay", "fixed"),
        ("operator:cy", "dlq-purge", ""),
    ]
    assert rows[0].saga_id == saga_id


async def test_watching_for_refailures_needs_broker_rights_when_asked(
    ns: Settings, engine: AsyncEngine
) -> None:
    """Guard for the declare failure path: a refused declare stops a stop-on-failure job."""
    await park(ns, 1)
    job_id = await make_job(ns, engine, rate=5.0, stop_on_failure=True)
    async with parking_queues(ns) as parking:
        # A namespace whose parking exchange does not exist: binding the watch queue fails.
        broken = type(parking.topology)(namespace=f"{ns.namespace}-missing")
        parking.topology = broken
        parking.consumers = ["payments"]
        jobs = ReplayJobs(engine)
        job = await jobs.get(job_id)
        async with engine.begin() as conn:
            await conn.execute(
                replay_jobs.update()
                .where(replay_jobs.c.id == job_id)
                .values(queue=broken.parking_queue("payments"))
            )
        stopped = await ReplayRunner(jobs, parking, runner="t").run(job.id)
    assert stopped.status == STOPPED
    assert "cannot watch for re-failures" in stopped.note
    assert await depth(ns, ns.topology.parking_queue("payments")) == 1


async def test_cli_pauses_and_stops_jobs_wherever_they_run(
    ns: Settings, engine: AsyncEngine
) -> None:
    await park(ns, 2)
    job_id = await make_job(ns, engine, rate=100.0)
    paused = await cli(ns, "dlq", "jobs", "--pause", str(job_id), "--note", "db upgrade")
    assert paused.exit_code == 0, paused.stderr
    assert f"replay job {job_id}: paused" in paused.stdout
    again = await cli(ns, "dlq", "jobs", "--pause", str(job_id))
    assert again.exit_code == 1
    assert again.stderr.strip() == f"error: replay job {job_id} is paused, not running"
    resumed = await cli(ns, "dlq", "replay", "--resume", str(job_id), "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == DONE
    stopped = await cli(ns, "dlq", "jobs", "--stop", str(job_id))
    assert stopped.exit_code == 1 and "is done, not running" in stopped.stderr
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(audit).where(audit.c.action == "job-pause").order_by(audit.c.id.desc())
            )
        ).first()
    assert row is not None and (row.actor, row.reason) == ("operator:ops-tester", "db upgrade")
