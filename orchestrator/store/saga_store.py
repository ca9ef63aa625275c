"""Apply saga steps in one transaction: inbox, compare-and-swap, history, outbox, timers.

A step reads (which messages are new, the sagas), decides in Python, and writes in one call
that is its own transaction (sql.py). The write checks what the read saw: the UPDATE ... WHERE
version = v either applies on top of exactly the state we decided from, or matches no row, and
a message id recorded meanwhile is a conflict too; then nothing of the batch is kept (inbox
rows included) and the steps are decided again.
A single message is a batch of one: both paths share one implementation (plan.py, sql.py).
The intake's batches may skip the read when this process committed every saga of the batch
last (snapshot_cache.py): the write's checks are the same, and a guess they refuse is decided
again from a read.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.topology import Topology
from orchestrator.dispatch_marks import PendingMarks
from orchestrator.engine import (
    Decision,
    EngineConfig,
    Incoming,
    RuntimeState,
    SagaSnapshot,
    UnexpectedMessage,
)
from orchestrator.engine.model import TIMER_PREFIX
from orchestrator.engine.registry import Workflows
from orchestrator.store import sql
from orchestrator.store.plan import OutboxMessage, actor_of, plan_batch
from orchestrator.store.snapshot_cache import SnapshotCache
from orchestrator.store.sql import NOTIFY_CHANNEL, ConcurrencyConflict
from orchestrator.store.tables import instances, outbox
from sagaline.faults import crash_point
from sagaline.messaging.errors import ReportableError, error_summary
from sagaline.messaging.stages import mark

log = logging.getLogger("sagaline.store")

Clock = Callable[[], datetime]

__all__ = [
    "NOTIFY_CHANNEL",
    "Clock",
    "ConcurrencyConflict",
    "ConflictRetriesExhausted",
    "SagaStore",
    "StepResult",
    "UnexpectedMessage",
    "driver_connection",
    "load_snapshot",
    "unpublished_count",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class ConflictRetriesExhausted(ReportableError):
    """The step kept losing races; the delivery goes through the broker's retry ladder."""


class GuessMissed(ConcurrencyConflict):
    """A batch decided from the snapshot cache fell short in its write: decide it again from a
    real read (not a race with another transaction, unless that is why the cache was stale)."""


def _wrong_guess(error: BaseException) -> bool:
    """A guessed batch's write fell short of what a read would have shown (a saga moved, a
    message or key already recorded); a lost deadlock is a race, read or guessed alike."""
    return isinstance(error, ConcurrencyConflict) and not isinstance(error, sql.LostDeadlock)


@dataclass(frozen=True)
class StepResult:
    decision: Decision | None
    """None when the message id was already processed (a duplicate delivery)."""
    saga_id: uuid.UUID
    conflicts: int = 0
    workflow: str | None = None
    previous_update: datetime | None = None
    """When the saga had last changed before this step (None for a new saga)."""
    at: datetime | None = None
    definition_version: int | None = None
    """The version of the workflow whose machine decided the step."""
    outbox: tuple[OutboxMessage, ...] = ()
    """The messages the step wrote to the outbox, for the caller that dispatches them."""

    @property
    def duplicate(self) -> bool:
        return self.decision is None


BatchResult = StepResult | ReportableError
"""Per message: its step, or why the engine refused it (the caller parks or reports it)."""


@dataclass(frozen=True)
class FiredTimer:
    result: StepResult
    due_at: datetime


class SagaStore:
    """Saga steps in transactions: one message (`handle`) or a batch (`handle_batch`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        topology: Topology,
        config: EngineConfig,
        workflows: Workflows,
        *,
        clock: Clock = utcnow,
        max_conflict_retries: int = 20,
        on_conflict: Callable[[], None] | None = None,
        dispatch_lease: timedelta = timedelta(seconds=5),
        pending_marks: PendingMarks | None = None,
        snapshots: SnapshotCache | None = None,
    ) -> None:
        self.engine = engine
        self.topology = topology
        self.config = config
        self.workflows = workflows
        """The machines this store decides with, given by the composition root."""
        self.clock = clock
        self.max_conflict_retries = max_conflict_retries
        self.on_conflict = on_conflict
        self.dispatch_lease = dispatch_lease
        """How long the relay loop leaves the outbox rows of a batch to the caller that
        dispatches them itself (`notify_relay=False`)."""
        self.pending_marks = pending_marks
        """Dispatched rows the next write marks sent (orchestrator.dispatch_marks)."""
        self.snapshots = snapshots if snapshots is not None else SnapshotCache(0)
        """The sagas this store committed last, for batches that may skip their read."""

    async def handle(
        self,
        incoming: Incoming,
        *,
        actor: str | None = None,
        trace_headers: Mapping[str, str] | None = None,
        timer_guard: bool = False,
    ) -> StepResult:
        """Decide and apply one step; raises the engine's refusal (unknown saga, …) if any."""
        (result,) = await self.handle_batch(
            [incoming],
            actors=[actor or actor_of(incoming)],
            trace_headers=[trace_headers or {}],
            timer_guard=timer_guard,
        )
        if isinstance(result, ReportableError):
            raise result
        return result

    async def handle_batch(
        self,
        incomings: Sequence[Incoming],
        *,
        actors: Sequence[str] | None = None,
        trace_headers: Sequence[Mapping[str, str]] | None = None,
        timer_guard: bool = False,
        notify_relay: bool = True,
        guess: bool = False,
    ) -> list[BatchResult]:
        """Apply a batch in one transaction, as if its messages were applied one by one.

        On a version conflict the transaction rolls back; a batch is split in halves so that
        one contended saga does not hold up the rest, and single steps are retried with jitter.
        `notify_relay=False` when the caller dispatches the steps' outbox rows itself (each
        StepResult's `outbox`): they are leased to it for `dispatch_lease`. `guess`: the
        batch may be decided from the snapshot cache without a read (the intake's batches);
        when that guess falls short it is decided again from a read, and is not a conflict.
        """
        items = list(incomings)
        who = list(actors) if actors is not None else [actor_of(i) for i in items]
        headers = list(trace_headers) if trace_headers is not None else [{}] * len(items)
        conflicts = 0
        guessing = guess and not timer_guard
        while True:
            try:
                return await self._transaction(
                    items, who, headers, timer_guard, conflicts, notify_relay, guessing
                )
            except GuessMissed:
                guessing = False
            except ConcurrencyConflict:
                guessing = False
                conflicts += 1
                if self.on_conflict is not None:
                    self.on_conflict()
                if len(items) > 1:
                    half = len(items) // 2
                    first = await self.handle_batch(
                        items[:half],
                        actors=who[:half],
                        trace_headers=headers[:half],
                        notify_relay=notify_relay,
                    )
                    rest = await self.handle_batch(
                        items[half:],
                        actors=who[half:],
                        trace_headers=headers[half:],
                        notify_relay=notify_relay,
                    )
                    return first + rest
                if conflicts >= self.max_conflict_retries:
                    raise ConflictRetriesExhausted(
                        f"saga step lost {conflicts} races in a row"
                    ) from None
                # Jitter spreads replicas racing on one saga so that one of them wins quickly.
                await asyncio.sleep(random.uniform(0, 0.002 * conflicts))

    async def fire_due_timers(self, limit: int) -> list[FiredTimer]:
        """Claim up to `limit` due timers (earliest first) and fire them in one transaction.

        When a saga moved under the batch, the rollback restores the claimed rows and this
        round fires them one by one instead (each with its own conflict retries).
        """
        try:
            return await self._fire(limit)
        except ConcurrencyConflict:
            if self.on_conflict is not None:
                self.on_conflict()
        return await self._fire_one_by_one(limit)

    async def _fire_one_by_one(self, limit: int) -> list[FiredTimer]:
        async with self.engine.connect() as sa_conn:
            conn = await driver_connection(sa_conn)
            due = await conn.fetch(
                "SELECT saga_id, name, message_id, due_at FROM saga.timers WHERE due_at <= $1"
                " ORDER BY due_at, saga_id LIMIT $2",
                self.clock(),
                limit,
            )
        fired = []
        for row in due:
            incoming = Incoming.timer(row["saga_id"], row["name"], row["message_id"])
            try:
                result = await self.handle(incoming, actor="timer", timer_guard=True)
            except ReportableError as exc:
                log.error(
                    "timer could not fire",
                    extra={"saga_id": str(row["saga_id"]), "error": error_summary(exc)},
                )
                continue
            if not result.duplicate:
                fired.append(FiredTimer(result, row["due_at"]))
        return fired

    async def _fire(self, limit: int) -> list[FiredTimer]:
        async with self.engine.connect() as sa_conn:
            conn = await driver_connection(sa_conn)
            await sql.prepare(conn)
            async with conn.transaction():
                now = self.clock()
                claimed = await conn.fetch(sql.CLAIM_DUE_TIMERS, now, limit)
                if not claimed:
                    return []
                await conn.executemany(  # one round trip: asyncpg pipelines the rows
                    sql.DELETE_TIMER, [(row["saga_id"], row["name"]) for row in claimed]
                )
                incomings = [
                    Incoming.timer(row["saga_id"], row["name"], row["message_id"])
                    for row in claimed
                ]
                results = await self._apply(
                    conn, incomings, ["timer"] * len(incomings), [{}] * len(incomings), 0, now
                )
        fired = []
        for row, result in zip(claimed, results, strict=True):
            if isinstance(result, StepResult) and not result.duplicate:
                fired.append(FiredTimer(result, row["due_at"]))
            elif isinstance(result, ReportableError):
                log.error(
                    "timer could not fire",
                    extra={"saga_id": str(row["saga_id"]), "error": error_summary(result)},
                )
        return fired

    async def _transaction(
        self,
        incomings: list[Incoming],
        actors: list[str],
        headers: list[Mapping[str, str]],
        timer_guard: bool,
        conflicts: int,
        notify_relay: bool,
        guess: bool = False,
    ) -> list[BatchResult]:
        async with self.engine.connect() as sa_conn:
            conn = await driver_connection(sa_conn)
            await sql.prepare(conn)
            mark("tx_connected")
            now = self.clock()
            if not timer_guard:  # the write commits on its own: no BEGIN, no COMMIT
                return await self._apply(
                    conn,
                    incomings,
                    actors,
                    headers,
                    conflicts,
                    now,
                    notify_relay,
                    marking=True,
                    guess=guess,
                )
            async with conn.transaction():  # the timers' rows go with the step, or stay
                if not await _claim_timers(conn, incomings):
                    return [StepResult(None, i.saga_id, conflicts) for i in incomings]
                return await self._apply(
                    conn, incomings, actors, headers, conflicts, now, notify_relay
                )

    async def _apply(
        self,
        conn: asyncpg.Connection,
        incomings: list[Incoming],
        actors: list[str],
        headers: list[Mapping[str, str]],
        conflicts: int,
        now: datetime,
        notify_relay: bool = True,
        *,
        marking: bool = False,
        guess: bool = False,
    ) -> list[BatchResult]:
        """`marking`: the write commits on its own, so it may carry the pending marks (inside a
        caller's transaction, a failed commit would lose them), and the snapshot cache may
        remember what it wrote. `guess`: decide from the snapshot cache if it knows every saga
        (each message is then taken as new, each start as unclaimed; the write checks both)."""
        start_keys = [self.workflows.start_key(i) for i in incomings]
        known = self.snapshots.guess(incomings, start_keys) if guess else None
        if known is None:
            read = await sql.read(conn, incomings, start_keys)
        else:
            read = sql.BatchRead([True] * len(incomings), known, {})
        mark("tx_loaded")
        plan = plan_batch(
            incomings,
            read.fresh,
            read.loaded,
            read.owners,
            self.topology,
            self.config,
            now,
            headers,
            actors,
            self.workflows,
        )
        mark("tx_planned")
        if known is not None and any(isinstance(step, ReportableError) for step in plan.steps):
            # A refusal leaves no inbox row for the write to trip on, so a guess cannot tell it
            # from a message already processed (a duplicate, to be acked): ask the database.
            raise GuessMissed("a refused step in a guessed batch")
        crash_point("orchestrator.before_commit")
        lease = None if notify_relay else self.dispatch_lease
        pending = self.pending_marks if marking else None
        marks = pending.take() if pending is not None else []
        try:
            texts = await sql.write(
                conn, plan, notify_relay=notify_relay, dispatch_lease=lease, marks=marks
            )
        except BaseException as exc:
            if pending is not None:
                pending.give_back(marks)  # marked again later: the update is idempotent
            if known is not None and _wrong_guess(exc):
                self.snapshots.missed(plan.slots)
                raise GuessMissed(str(exc)) from None
            # Committed or not (a lost connection may hide a commit), or raced by another
            # writer (a lost deadlock, a conflict whether guessed or read): read them again.
            self.snapshots.forget(plan.slots)
            raise
        if pending is not None:
            pending.written(marks)
        if known is not None:
            self.snapshots.held()
        if marking:
            self.snapshots.remember(
                ((i, slot.current) for i, slot in plan.slots.items()), time.monotonic(), texts
            )
        else:  # the caller's transaction may still roll back
            self.snapshots.forget(plan.slots)
        mark("tx_written")
        written = {message.message_id: message for message in plan.outbox}
        results: list[BatchResult] = []
        for incoming, step in zip(incomings, plan.steps, strict=True):
            if step is None:
                results.append(StepResult(None, incoming.saga_id, conflicts, at=now))
            elif isinstance(step, ReportableError):
                results.append(step)
            else:
                results.append(
                    StepResult(
                        step.decision,
                        step.saga_id,
                        conflicts,
                        workflow=step.workflow,
                        previous_update=step.previous_update,
                        at=now,
                        definition_version=step.definition_version,
                        outbox=tuple(written[o.message_id] for o in step.decision.outgoing),
                    )
                )
        return results


async def driver_connection(sa_conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy one: the hot paths' statements use it."""
    raw = await sa_conn.get_raw_connection()
    return raw.driver_connection


async def _claim_timers(conn: asyncpg.Connection, incomings: list[Incoming]) -> bool:
    """Delete the timer rows about to fire; False if any was cancelled or moved meanwhile."""
    for incoming in incomings:
        row = await conn.fetchrow(
            "DELETE FROM saga.timers WHERE saga_id = $1 AND name = $2 AND message_id = $3"
            " RETURNING name",
            incoming.saga_id,
            incoming.trigger.removeprefix(TIMER_PREFIX),
            incoming.message_id,
        )
        if row is None:
            return False
    return True


async def load_snapshot(conn: AsyncConnection, saga_id: uuid.UUID) -> SagaSnapshot | None:
    row = (await conn.execute(select(instances).where(instances.c.id == saga_id))).first()
    if row is None:
        return None
    return SagaSnapshot(
        saga_id=row.id,
        workflow=row.workflow,
        business_key=row.business_key,
        state=row.state,
        data=dict(row.data),
        runtime=RuntimeState.from_json(row.runtime),
        version=row.version,
        finished=row.finished_at is not None,
        updated_at=row.updated_at,
        definition_version=row.definition_version,
    )


async def unpublished_count(conn: AsyncConnection) -> int:
    value = await conn.scalar(
        select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
    )
    return int(value or 0)
