"""Replay jobs as rows: a job (queue, selection, rate, status, counts, who and why) and its
plan (console.replay_items: every parked copy it will replay, each pending -> replayed
(-> refailed) or -> gone). The console's buttons and the CLI's `dlq jobs --pause|--stop` change
a job's status here; its runner (replay.py) reads it at each heartbeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaline.messaging.parking import ParkedMessage
from sagaline_tools.console import audit
from sagaline_tools.console.index import forget
from sagaline_tools.console.keys import saga_id_of
from sagaline_tools.console.tables import replay_items, replay_jobs

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


class JobError(Exception):
    """A job cannot be created, claimed or run; one clear line for the operator."""


class JobNotFound(JobError):
    pass


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
            raise JobNotFound(f"no replay job {job_id}")
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
                raise JobNotFound(f"no replay job {job_id}")
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
