"""Apply one saga step in one transaction: inbox, compare-and-swap, history, outbox, timers.

Isolation is READ COMMITTED plus an explicit version check: the UPDATE ... WHERE version = v
either applies on top of exactly the state we decided from, or matches no row, in which case
the whole transaction (inbox row included) rolls back and the step is decided again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import propagate
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.envelope import new_envelope
from contracts.topology import Topology
from orchestrator.engine import (
    Decision,
    EngineConfig,
    Incoming,
    Machine,
    Outcome,
    RuntimeState,
    SagaSnapshot,
    decide,
)
from orchestrator.store.tables import history, inbox, instances, outbox, timers
from orchestrator.workflows import WORKFLOWS, machine_for
from sagaline.faults import crash_point
from sagaline.messaging.errors import ReportableError

log = logging.getLogger("sagaline.store")

NOTIFY_CHANNEL = "sagaline_outbox"
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class ConcurrencyConflict(Exception):
    """Another transaction changed the saga between our read and our write."""


class ConflictRetriesExhausted(ReportableError):
    """The step kept losing races; the delivery goes through the broker's retry ladder."""


class UnexpectedMessage(ReportableError):
    """No workflow consumes this message type."""


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

    @property
    def duplicate(self) -> bool:
        return self.decision is None


class SagaStore:
    def __init__(
        self,
        engine: AsyncEngine,
        topology: Topology,
        config: EngineConfig,
        *,
        clock: Clock = utcnow,
        max_conflict_retries: int = 20,
        on_conflict: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.topology = topology
        self.config = config
        self.clock = clock
        self.max_conflict_retries = max_conflict_retries
        self.on_conflict = on_conflict

    async def handle(
        self,
        incoming: Incoming,
        *,
        actor: str = "message",
        trace_headers: Mapping[str, str] | None = None,
        timer_guard: bool = False,
    ) -> StepResult:
        """Decide and apply one step, retrying the whole transaction on version conflicts."""
        for attempt in range(self.max_conflict_retries):
            try:
                async with self.engine.begin() as conn:
                    if timer_guard and not await _claim_timer(conn, incoming):
                        return StepResult(None, incoming.saga_id, attempt)
                    return await self._step(
                        conn, incoming, actor, dict(trace_headers or {}), attempt
                    )
            except ConcurrencyConflict:
                if self.on_conflict is not None:
                    self.on_conflict()
                # Jitter spreads replicas racing on one saga so that one of them wins quickly.
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ConflictRetriesExhausted(f"saga step lost {self.max_conflict_retries} races in a row")

    async def _step(
        self,
        conn: AsyncConnection,
        incoming: Incoming,
        actor: str,
        trace_headers: dict[str, str],
        conflicts: int,
    ) -> StepResult:
        now = self.clock()
        fresh = await conn.execute(
            pg_insert(inbox)
            .values(
                message_id=incoming.message_id,
                saga_id=incoming.saga_id,
                message_type=incoming.trigger,
                received_at=now,
            )
            .on_conflict_do_nothing()
            .returning(inbox.c.message_id)
        )
        if fresh.first() is None:
            return StepResult(None, incoming.saga_id, conflicts)

        snapshot = await load_snapshot(conn, incoming.saga_id)
        machine = self._machine(incoming, snapshot)
        decision = decide(machine, snapshot, incoming, now, self.config)

        saga_id = incoming.saga_id
        if decision.outcome is Outcome.STARTED:
            saga_id = await self._insert_instance(conn, machine, incoming, decision, now)
            if saga_id != incoming.saga_id:
                decision = await self._duplicate_start(conn, saga_id, incoming)
        elif decision.outcome is Outcome.TRANSITIONED:
            assert snapshot is not None
            await self._compare_and_swap(conn, snapshot, decision, now)
        else:
            assert snapshot is not None
            await _hold_version(conn, snapshot)

        await conn.execute(
            history.insert().values(
                saga_id=saga_id,
                version=decision.version,
                at=now,
                message_id=incoming.message_id,
                message_type=incoming.trigger,
                outcome=decision.outcome.value,
                from_state=decision.from_state,
                to_state=decision.to_state,
                commands=[
                    {
                        "type": o.message.message_type,
                        "message_id": str(o.message_id),
                        "kind": o.kind,
                    }
                    for o in decision.outgoing
                ],
                actor=actor,
                note=decision.note,
            )
        )
        if decision.changes_saga:
            await self._write_outbox(conn, saga_id, incoming, decision, trace_headers, now)
            await self._write_timers(conn, saga_id, decision, now)
        crash_point("orchestrator.before_commit")
        return StepResult(
            decision,
            saga_id,
            conflicts,
            workflow=machine.name,
            previous_update=snapshot.updated_at if snapshot else None,
            at=now,
        )

    def _machine(self, incoming: Incoming, snapshot: SagaSnapshot | None) -> Machine[Any, Any]:
        if incoming.payload is None:  # a timer: it belongs to the saga's own workflow
            if snapshot is None:
                raise UnexpectedMessage("timer for a saga that no longer exists")
            return WORKFLOWS[snapshot.workflow]
        machine = machine_for(incoming.trigger)
        if machine is None:
            raise UnexpectedMessage(f"no workflow consumes {incoming.trigger}")
        return machine

    async def _insert_instance(
        self,
        conn: AsyncConnection,
        machine: Machine[Any, Any],
        incoming: Incoming,
        decision: Decision,
        now: datetime,
    ) -> uuid.UUID:
        """Insert a new saga; return the id of the saga that owns the business key."""
        created = await conn.execute(
            pg_insert(instances)
            .values(
                id=incoming.saga_id,
                workflow=machine.name,
                business_key=decision.business_key,
                state=decision.to_state,
                data=decision.data,
                runtime=decision.runtime.to_json(),
                version=decision.version,
                created_at=now,
                updated_at=now,
                finished_at=now if decision.finished else None,
            )
            .on_conflict_do_nothing()
            .returning(instances.c.id)
        )
        if created.first() is not None:
            return incoming.saga_id
        same_id = await conn.scalar(
            select(instances.c.id).where(instances.c.id == incoming.saga_id)
        )
        if same_id is not None:
            raise ConcurrencyConflict  # a concurrent start of this very saga won; decide again
        owner = await conn.scalar(
            select(instances.c.id).where(
                instances.c.workflow == machine.name,
                instances.c.business_key == decision.business_key,
            )
        )
        if owner is None:  # pragma: no cover - the conflicting row vanished; decide again
            raise ConcurrencyConflict
        return uuid.UUID(str(owner))

    async def _duplicate_start(
        self, conn: AsyncConnection, owner: uuid.UUID, incoming: Incoming
    ) -> Decision:
        snapshot = await load_snapshot(conn, owner)
        assert snapshot is not None
        await conn.execute(
            update(inbox).where(inbox.c.message_id == incoming.message_id).values(saga_id=owner)
        )
        return Decision(
            outcome=Outcome.DUPLICATE_START,
            from_state=snapshot.state,
            to_state=snapshot.state,
            data=snapshot.data,
            runtime=snapshot.runtime,
            finished=snapshot.finished,
            note=f"business key already started by saga {owner}; correlation id {incoming.saga_id}",
            business_key=snapshot.business_key,
            version=snapshot.version,
        )

    async def _compare_and_swap(
        self, conn: AsyncConnection, snapshot: SagaSnapshot, decision: Decision, now: datetime
    ) -> None:
        result = await conn.execute(
            update(instances)
            .where(instances.c.id == snapshot.saga_id, instances.c.version == snapshot.version)
            .values(
                state=decision.to_state,
                data=decision.data,
                runtime=decision.runtime.to_json(),
                version=decision.version,
                updated_at=now,
                finished_at=now if decision.finished else None,
            )
        )
        if result.rowcount != 1:
            raise ConcurrencyConflict

    async def _write_outbox(
        self,
        conn: AsyncConnection,
        saga_id: uuid.UUID,
        incoming: Incoming,
        decision: Decision,
        trace_headers: dict[str, str],
        now: datetime,
    ) -> None:
        if not decision.outgoing:
            return
        # The current span (this transition, child of the consume span) becomes the parent of
        # every command's publish: command, worker and reply stay in the event's trace.
        headers = dict(trace_headers)
        propagate.inject(headers)
        rows = []
        for item in decision.outgoing:
            envelope = new_envelope(
                item.message,
                correlation_id=saga_id,
                causation_id=incoming.message_id,
                message_id=item.message_id,
                occurred_at=now,
            )
            exchange = (
                self.topology.commands_exchange
                if item.kind == "command"
                else self.topology.events_exchange
            )
            rows.append(
                {
                    "message_id": item.message_id,
                    "saga_id": saga_id,
                    "exchange": exchange,
                    "routing_key": item.message.message_type,
                    "message_type": item.message.message_type,
                    "body": envelope.to_json(),
                    "headers": headers,
                    "created_at": now,
                }
            )
        await conn.execute(insert(outbox), rows)
        # Delivered at commit: wakes the relay without polling latency.
        await conn.execute(text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"))

    async def _write_timers(
        self, conn: AsyncConnection, saga_id: uuid.UUID, decision: Decision, now: datetime
    ) -> None:
        if decision.finished:
            await conn.execute(delete(timers).where(timers.c.saga_id == saga_id))
            return
        for change in decision.timers:
            if change.due_at is None:
                await conn.execute(
                    delete(timers).where(timers.c.saga_id == saga_id, timers.c.name == change.name)
                )
                continue
            statement = pg_insert(timers).values(
                saga_id=saga_id,
                name=change.name,
                message_id=change.message_id,
                due_at=change.due_at,
                created_at=now,
            )
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[timers.c.saga_id, timers.c.name],
                    set_={
                        "message_id": statement.excluded.message_id,
                        "due_at": statement.excluded.due_at,
                    },
                )
            )


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
    )


async def _hold_version(conn: AsyncConnection, snapshot: SagaSnapshot) -> None:
    """Lock the saga row at the version we decided from, or report a conflict.

    Even a decision that changes nothing (ignore, stale) was made from a snapshot: if the saga
    moved meanwhile, the same message might be handled in the new state, so decide again.
    """
    result = await conn.execute(
        update(instances)
        .where(instances.c.id == snapshot.saga_id, instances.c.version == snapshot.version)
        .values(version=instances.c.version)
    )
    if result.rowcount != 1:
        raise ConcurrencyConflict


async def _claim_timer(conn: AsyncConnection, incoming: Incoming) -> bool:
    """Delete the due timer row we are about to fire; False if it was cancelled or moved."""
    name = incoming.trigger.removeprefix("timer:")
    result = await conn.execute(
        delete(timers)
        .where(
            timers.c.saga_id == incoming.saga_id,
            timers.c.name == name,
            timers.c.message_id == incoming.message_id,
        )
        .returning(timers.c.name)
    )
    return result.first() is not None


async def unpublished_count(conn: AsyncConnection) -> int:
    value = await conn.scalar(
        select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
    )
    return int(value or 0)
