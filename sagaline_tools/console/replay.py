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

import aio_pika
from aio_pika.abc import AbstractQueue

from sagaline.messaging.parking import DlqError, ParkedMessage, ParkingQueues, describe
from sagaline_tools.console.jobs import (
    CANCELLED,
    DONE,
    PAUSED,
    STOPPED,
    Item,
    Job,
    ReplayJobs,
)
from sagaline_tools.console.keys import key_of

log = logging.getLogger("sagaline.replay")

HEARTBEAT_SECONDS = 1.0
PASS_SECONDS = 120.0
"""Longest one pass holds the messages it took (well under the broker's consumer timeout)."""


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
