"""Replay jobs: send many parked messages back at a chosen rate, with progress that survives
a crash, an optional stop at the first message that fails again, and resume.

A job is planned before it sends anything: the parked copies it will replay (key and replay
count) are written to console.replay_items, from the parked-message index (the console) or
from one pass over the queue (the CLI). That plan is also the dry-run preview, and the
progress: each copy's state moves pending -> replayed (-> refailed when it is parked again)
or -> gone (no longer parked when the job got to it: replayed or purged by someone else).

Running walks the parking queue (ParkingQueues.walking) and replays exactly the planned
copies, each the way `sagaline dlq replay` does (a confirmed copy to the original queue with
the same message id, then the parked one is acked), paced to the rate. Everything else it takes
returns to the queue when the pass ends; a pass is bounded in time, so nothing is held long. A
job never replays a message twice: a planned message seen again with a higher replay count
was parked again after this job replayed it, and counts as refailed. While the job runs, a
private queue bound to the parking exchange shows every copy parked for that queue the moment
it is parked, which is how `stop on failure` notices a re-failure without rescanning.

The job row is the control: the console's pause and stop buttons change its status, the runner
reads it between messages; a heartbeat tells a resumer whether someone still runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractQueue
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaline.messaging.parking import DlqError, ParkedMessage, ParkingQueues, describe
from sagaline_tools.console import audit
from sagaline_tools.console.index import forget
from sagaline_tools.console.keys import key_of, saga_id_of
from sagaline_tools.console.tables import replay_items, replay_jobs

log = logging.getLogger("sagaline.replay")

Clock = Callable[[], datetime]

RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"
DONE = "done"
AWAITING_APPROVAL = "awaiting-approval"
CANCELLED = "cancelled"
RESUMABLE = (RUNNING, PAUSED, STOPPED)

STALE_AFTER = timedelta(seconds=30)
"""A running job whose heartbeat is older than this has lost its runner: it may be resumed."""
HEARTBEAT_SECONDS = 1.0
PASS_SECONDS = 120.0
"""Longest one pass holds the messages it took (well under the broker's consumer timeout)."""


class JobError(Exception):
    """A job cannot be created, claimed or run; one clear line for the operator."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Item:
    key: str
    replays: int
    message_id: str | None
    message_type: str | None
    saga_id: uuid.UUID | None

    @classmethod
    def of(cls, key: str, parked: ParkedMessage) -> Item:
        return cls(
            key, parked.replays, parked.message_id, parked.message_type,
            saga_id_of(parked.correlation_id),
        )  # fmt: skip


@dataclass(frozen=True)
class Job:
    id: int
    queue: str
    selection: dict[str, Any]
    rate: float
    stop_on_failure: bool
    status: str
    runner: str
    total: int
    replayed: int
    refailed: int
    gone: int
    created_by: str
    reason: str
    note: str
    created_at: datetime
    updated_at: datetime
    heartbeat_at: datetime | None

    @property
    def pending(self) -> int:
        return self.total - self.replayed - self.gone

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pending"] = self.pending
        for key in ("created_at", "updated_at", "heartbeat_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


class ReplayJobs:
    """The job rows: create, read, claim, and record each message's fate."""

    def __init__(self, engine: AsyncEngine, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    async def create(
        self,
        queue: str,
        selection: dict[str, Any],
        items: list[Item],
        *,
        rate: float,
        stop_on_failure: bool,
        operator: str,
        reason: str,
        runner: str,
        status: str = RUNNING,
    ) -> Job:
        if rate <= 0:
            raise JobError("the rate must be more than zero messages per second")
        now = self.clock()
        async with self.engine.begin() as conn:
            job_id = (
                await conn.execute(
                    replay_jobs.insert()
                    .values(
                        queue=queue, selection=selection, rate=rate,
                        stop_on_failure=stop_on_failure, status=status, runner=runner,
                        total=len(items), replayed=0, refailed=0, gone=0, created_by=operator,
                        reason=reason, note="", created_at=now, updated_at=now,
                    )
                    .returning(replay_jobs.c.id)
                )
            ).scalar_one()  # fmt: skip
            if items:
                await conn.execute(
                    replay_items.insert(),
                    [
                        {
                            "job_id": job_id, "message_key": i.key, "replays": i.replays,
                            "message_id": i.message_id, "message_type": i.message_type,
                            "saga_id": i.saga_id, "state": "pending",
                        }
                        for i in items
                    ],
                )  # fmt: skip
            await audit.record(
                conn, operator, "dlq-replay-job", f"{queue} job {job_id}", reason,
                details={"job": job_id, "selection": selection, "count": len(items),
                         "rate": rate, "stop_on_failure": stop_on_failure, "status": status},
                at=now,
            )  # fmt: skip
        return await self.get(job_id)

    async def get(self, job_id: int) -> Job:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(replay_jobs).where(replay_jobs.c.id == job_id))
            ).first()
        if row is None:
            raise JobError(f"no replay job {job_id}")
        return Job(**row._asdict())

    async def recent(self, limit: int = 50) -> list[Job]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(replay_jobs).order_by(replay_jobs.c.id.desc()).limit(limit)
                )
            ).all()
        return [Job(**row._asdict()) for row in rows]

    async def items(self, job_id: int, state: str | None = None) -> dict[str, Item]:
        query = select(replay_items).where(replay_items.c.job_id == job_id)
        if state is not None:
            query = query.where(replay_items.c.state == state)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {
            r.message_key: Item(r.message_key, r.replays, r.message_id, r.message_type, r.saga_id)
            for r in rows
        }

    async def claim(self, job_id: int, runner: str) -> Job:
        """Take the job to run it: refused when it is finished or someone runs it right now."""
        now = self.clock()
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(replay_jobs).where(replay_jobs.c.id == job_id).with_for_update()
                )
            ).first()
            if row is None:
                raise JobError(f"no replay job {job_id}")
            if row.status not in RESUMABLE:
                raise JobError(f"replay job {job_id} is {row.status}; it cannot be resumed")
            alive = row.heartbeat_at is not None and now - row.heartbeat_at < STALE_AFTER
            if row.status == RUNNING and alive and row.runner != runner:
                raise JobError(f"replay job {job_id} is being run by {row.runner} right now")
            await conn.execute(
                update(replay_jobs)
                .where(replay_jobs.c.id == job_id)
                .values(status=RUNNING, runner=runner, heartbeat_at=now, updated_at=now, note="")
            )
        return await self.get(job_id)

    async def control(self, job_id: int, op: str, operator: str, reason: str) -> Job:
        """An operator's pause, stop or resume (console or CLI): the runner, wherever it runs,
        sees the new status at its next heartbeat; a resumed console job is picked up by the
        console's job loop, a CLI one by `dlq replay --resume`."""
        target = {"pause": PAUSED, "stop": CANCELLED, "resume": RUNNING}.get(op)
        if target is None:
            raise JobError(f"unknown job operation {op!r}")
        job = await self.get(job_id)
        if op == "resume" and job.status not in (PAUSED, STOPPED):
            raise JobError(
                f"replay job {job_id} is {job.status}; only a paused or stopped job resumes"
            )
        if op != "resume" and job.status != RUNNING:
            raise JobError(f"replay job {job_id} is {job.status}, not running")
        async with self.engine.begin() as conn:
            values: dict[str, Any] = {"status": target, "updated_at": self.clock()}
            if op == "resume":
                values |= {"heartbeat_at": None, "note": ""}
            await conn.execute(update(replay_jobs).where(replay_jobs.c.id == job_id).values(values))
            await audit.record(
                conn, operator, f"job-{op}", f"{job.queue} job {job_id}", reason,
                details={"job": job_id}, at=self.clock(),
            )  # fmt: skip
        return await self.get(job_id)

    async def heartbeat(self, job_id: int) -> str:
        """Keep the claim alive; returns the status (an operator may have paused or stopped it)."""
        now = self.clock()
        async with self.engine.begin() as conn:
            status = (
                await conn.execute(
                    update(replay_jobs)
                    .where(replay_jobs.c.id == job_id)
                    .values(heartbeat_at=now)
                    .returning(replay_jobs.c.status)
                )
            ).scalar_one()
        return str(status)

    async def set_status(self, job_id: int, status: str, note: str = "") -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(replay_jobs)
                .where(replay_jobs.c.id == job_id)
                .values(status=status, note=note[:500], updated_at=self.clock(), heartbeat_at=None)
            )

    async def mark(
        self, job_id: int, keys: list[str], state: str, *, left: tuple[str, int] | None = None
    ) -> None:
        """Move items to `state` (replayed, refailed or gone) and count them on the job;
        `left`: the (queue, replay count) of a copy that left its queue (the index forgets it)."""
        if not keys:
            return
        now = self.clock()
        source = {"replayed": ("pending",), "refailed": ("replayed",), "gone": ("pending",)}
        async with self.engine.begin() as conn:
            if left is not None:
                await forget(conn, left[0], [(key, left[1]) for key in keys])
            moved = (
                await conn.execute(
                    update(replay_items)
                    .where(
                        replay_items.c.job_id == job_id,
                        replay_items.c.message_key.in_(keys),
                        replay_items.c.state.in_(source[state]),
                    )
                    .values(state=state, done_at=now)
                    .returning(replay_items.c.message_key)
                )
            ).all()
            counter = replay_jobs.c[state]
            await conn.execute(
                update(replay_jobs)
                .where(replay_jobs.c.id == job_id)
                .values({counter: counter + len(moved), "updated_at": now})
            )

    async def counts(self, job_id: int) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(replay_items.c.state, func.count())
                    .where(replay_items.c.job_id == job_id)
                    .group_by(replay_items.c.state)
                )
            ).all()
        return {str(state): int(n) for state, n in rows}


async def plan_by_scan(
    parking: ParkingQueues, queue: str, matches: Callable[[ParkedMessage], bool]
) -> list[Item]:
    """One pass over the queue: every parked copy the selection matches (all return after)."""
    items: dict[str, Item] = {}
    async with parking.walking(queue) as walk:
        while (taken := await walk.next()) is not None:
            message, parked = taken
            if matches(parked):
                key = key_of(message, parked)
                items.setdefault(key, Item.of(key, parked))
    return list(items.values())


Progress = Callable[[Job], Awaitable[None] | None]


class ReplayRunner:
    """Runs one job to its end (done), or until paused, stopped or a re-failure stops it."""

    def __init__(
        self,
        jobs: ReplayJobs,
        parking: ParkingQueues,
        *,
        runner: str,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pass_seconds: float = PASS_SECONDS,
        on_progress: Progress | None = None,
    ) -> None:
        self.jobs = jobs
        self.parking = parking
        self.runner = runner
        self.monotonic = monotonic
        self.sleep = sleep
        self.pass_seconds = pass_seconds
        self.on_progress = on_progress

    async def run(self, job_id: int) -> Job:
        job = await self.jobs.claim(job_id, self.runner)
        pending = {k: i.replays for k, i in (await self.jobs.items(job_id, "pending")).items()}
        replayed = {k: i.replays for k, i in (await self.jobs.items(job_id, "replayed")).items()}
        state = _RunState(job, pending, replayed, self.monotonic())
        state.refailed = set(await self.jobs.items(job_id, "refailed"))
        try:
            async with self._watch(job) as watch:
                state.watch = watch
                while state.pending and state.outcome is None:
                    await self._pass(state)
        except DlqError as exc:
            await self.jobs.set_status(job_id, STOPPED, f"stopped: {exc}")
            return await self._report(job_id)
        except BaseException:
            # Interrupted (Ctrl-C, shutdown): progress is in the table; resume picks it up.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.jobs.set_status(job_id, PAUSED, "interrupted"))
            raise
        status, note = state.outcome or (DONE, "")
        await self.jobs.set_status(job_id, status, note)
        return await self._report(job_id)

    async def _pass(self, state: _RunState) -> None:
        started = self.monotonic()
        seen_planned = False
        reached_end = False
        async with self.parking.walking(state.job.queue) as walk:
            while state.outcome is None and state.pending:
                if self.monotonic() - started > self.pass_seconds:
                    break
                taken = await walk.next()
                if taken is None:
                    reached_end = True
                    break
                message, parked = taken
                key = key_of(message, parked)
                planned = state.pending.get(key)
                if planned is not None and parked.replays == planned:
                    seen_planned = True
                    await self._pace(state)
                    if state.outcome is not None:
                        break  # stopped while waiting for its turn: it returns to the queue
                    await walk.replay(message, parked)
                    del state.pending[key]
                    state.replayed[key] = parked.replays
                    state.sent += 1
                    await self.jobs.mark(
                        state.job.id, [key], "replayed", left=(state.job.queue, parked.replays)
                    )
                elif key in state.replayed and parked.replays > state.replayed[key]:
                    await self._refailed(state, key, parked)
                await self._check(state)
        if reached_end and not seen_planned and state.outcome is None:
            # A whole pass without one of them: they are no longer parked.
            await self.jobs.mark(state.job.id, list(state.pending), "gone")
            state.pending.clear()

    async def _pace(self, state: _RunState) -> None:
        due = state.started + state.sent / state.job.rate
        wait = due - self.monotonic()
        while wait > 0 and state.outcome is None:
            await self.sleep(min(wait, HEARTBEAT_SECONDS))
            await self._check(state)
            wait = due - self.monotonic()

    async def _check(self, state: _RunState) -> None:
        """Between messages: re-failures seen by the watch, the operator's controls, progress."""
        while state.watch is not None and state.outcome is None:
            copy = await state.watch.get(no_ack=True, fail=False)
            if copy is None:
                break
            parked = describe(copy, 0)
            key = key_of(copy, parked)
            if key in state.replayed and parked.replays > state.replayed[key]:
                await self._refailed(state, key, parked)
        now = self.monotonic()
        if now - state.last_beat >= HEARTBEAT_SECONDS:
            state.last_beat = now
            status = await self.jobs.heartbeat(state.job.id)
            if status in (PAUSED, STOPPED, CANCELLED):
                state.outcome = (status, f"{status} by an operator")
            await self._report(state.job.id)

    async def _refailed(self, state: _RunState, key: str, parked: ParkedMessage) -> None:
        if key in state.refailed:
            return
        state.refailed.add(key)
        await self.jobs.mark(state.job.id, [key], "refailed")
        if state.job.stop_on_failure:
            state.outcome = (
                STOPPED,
                f"stopped: {parked.message_type or 'message'} {parked.message_id or key} "
                f"failed again ({parked.reason})",
            )

    @contextlib.asynccontextmanager
    async def _watch(self, job: Job) -> AsyncIterator[AbstractQueue | None]:
        """A private queue that receives a copy of everything parked for the job's queue."""
        consumer = _consumer_of(self.parking, job.queue)
        routing_key = self.parking.topology.work_queue(consumer)
        name = f"{self.parking.topology.namespace}.replay-watch.{job.id}-{uuid.uuid4().hex[:8]}"
        channel = await self.parking.connection.channel()
        try:
            try:
                watch = await channel.declare_queue(name, exclusive=True, auto_delete=True)
                await watch.bind(self.parking.topology.parking_exchange, routing_key)
            except aio_pika.exceptions.AMQPError as exc:
                if job.stop_on_failure:
                    raise DlqError(
                        f"cannot watch for re-failures ({type(exc).__name__}); the broker user "
                        f"needs rights on {self.parking.topology.namespace}.replay-watch.*"
                    ) from None
                log.warning("replay job runs without watching for re-failures")
                yield None
                return
            yield watch
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _report(self, job_id: int) -> Job:
        job = await self.jobs.get(job_id)
        if self.on_progress is not None:
            result = self.on_progress(job)
            if result is not None:
                await result
        return job


class _RunState:
    def __init__(
        self, job: Job, pending: dict[str, int], replayed: dict[str, int], now: float
    ) -> None:
        self.job = job
        self.pending = pending
        self.replayed = replayed
        self.refailed: set[str] = set()
        self.started = now
        self.last_beat = now
        self.sent = 0
        self.watch: AbstractQueue | None = None
        self.outcome: tuple[str, str] | None = None


def _consumer_of(parking: ParkingQueues, queue: str) -> str:
    for consumer in parking.consumers:
        if parking.topology.parking_queue(consumer) == queue:
            return consumer
    raise DlqError(f"unknown parking queue {queue}")
