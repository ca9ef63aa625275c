"""Operator tools on durable timers: list them across sagas, cancel one, reschedule one.

Timers are rows (saga.timers); the timer loop fires a row in the transaction that deletes it
by its exact message id. So a cancel is a delete and a reschedule gives the row a new due time
and a new message id: a firing of the old row already in flight finds no such row and fires
nothing. Each action locks the saga row (a step racing on the saga waits, and the history keeps
the order things happened in) and writes a history entry with the operator as actor and the
reason in its note, as SagaAdmin's actions do.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.ids import uuid7
from orchestrator.admin import SagaAdmin, _as_dict, _log_action, check_request
from orchestrator.engine import OperatorRefused
from orchestrator.store.tables import history, instances, timers

MAX_TIMER_NAME = 100


@dataclass(frozen=True)
class TimerRow:
    saga_id: uuid.UUID
    workflow: str
    business_key: str
    state: str
    name: str
    due_at: datetime
    message_id: uuid.UUID
    created_at: datetime
    due_in_seconds: float
    """Negative when the timer is overdue (due and not yet fired)."""

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class TimerActionResult:
    saga_id: uuid.UUID
    action: str
    operator: str
    timer: str
    state: str
    due_at: datetime | None
    """The new due time (reschedule); None for a cancel."""
    previous_due_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self)


class TimerAdmin:
    def __init__(self, admin: SagaAdmin) -> None:
        self.admin = admin
        self.engine = admin.engine
        self.clock = admin.store.clock

    async def list(
        self,
        *,
        due: bool | None = None,
        saga: str | None = None,
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[TimerRow]:
        """Timers by due time, earliest first. `due`: only due (True) or only future (False)."""
        now = self.clock()
        query = select(
            timers.c.saga_id,
            timers.c.name,
            timers.c.due_at,
            timers.c.message_id,
            timers.c.created_at,
            instances.c.workflow,
            instances.c.business_key,
            instances.c.state,
        ).join(instances, instances.c.id == timers.c.saga_id)
        if saga is not None:
            query = query.where(timers.c.saga_id == await self.admin.resolve(saga))
        if name is not None:
            query = query.where(timers.c.name == name)
        if due is True:
            query = query.where(timers.c.due_at <= now)
        elif due is False:
            query = query.where(timers.c.due_at > now)
        # ix_timers_due serves the order; the join probes the instances' primary key.
        query = query.order_by(timers.c.due_at, timers.c.saga_id, timers.c.name)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [
            TimerRow(
                saga_id=r.saga_id,
                workflow=r.workflow,
                business_key=r.business_key,
                state=r.state,
                name=r.name,
                due_at=r.due_at,
                message_id=r.message_id,
                created_at=r.created_at,
                due_in_seconds=(r.due_at - now).total_seconds(),
            )
            for r in rows
        ]

    async def cancel(self, ref: str, name: str, operator: str, reason: str) -> TimerActionResult:
        """Delete the saga's timer `name`: it will not fire."""
        operator, reason = check_request(operator, reason)
        saga_id = await self.admin.resolve(ref)
        async with self.engine.begin() as conn:
            row = await _lock_saga(conn, saga_id)
            removed = (
                await conn.execute(
                    delete(timers)
                    .where(timers.c.saga_id == saga_id, timers.c.name == name)
                    .returning(timers.c.due_at)
                )
            ).first()
            if removed is None:
                raise await _no_such_timer(conn, saga_id, name)
            await self._record(
                conn,
                row,
                "timer-cancel",
                operator,
                f"cancel timer {name} (due {removed.due_at.isoformat()}) by {operator}: {reason}",
            )
        _log_action("timer-cancel", saga_id, operator, row.state, row.state)
        return TimerActionResult(saga_id, "cancel", operator, name, row.state, None, removed.due_at)

    async def reschedule(
        self, ref: str, name: str, due_at: datetime, operator: str, reason: str
    ) -> TimerActionResult:
        """Move the saga's timer `name` to `due_at` (in the past: it fires at the next poll)."""
        operator, reason = check_request(operator, reason)
        if due_at.tzinfo is None:
            raise OperatorRefused("the new due time needs a time zone (e.g. ...Z or +02:00)")
        saga_id = await self.admin.resolve(ref)
        async with self.engine.begin() as conn:
            row = await _lock_saga(conn, saga_id)
            previous = (
                await conn.execute(
                    select(timers.c.due_at)
                    .where(timers.c.saga_id == saga_id, timers.c.name == name)
                    .with_for_update()
                )
            ).scalar()
            if previous is None:
                raise await _no_such_timer(conn, saga_id, name)
            await conn.execute(
                update(timers)
                .where(timers.c.saga_id == saga_id, timers.c.name == name)
                .values(due_at=due_at, message_id=uuid7())
            )
            await self._record(
                conn,
                row,
                "timer-reschedule",
                operator,
                f"reschedule timer {name} from {previous.isoformat()} to {due_at.isoformat()}"
                f" by {operator}: {reason}",
            )
        _log_action("timer-reschedule", saga_id, operator, row.state, row.state)
        return TimerActionResult(saga_id, "reschedule", operator, name, row.state, due_at, previous)

    async def _record(
        self, conn: AsyncConnection, row: Any, action: str, operator: str, note: str
    ) -> None:
        await conn.execute(
            history.insert().values(
                saga_id=row.id,
                version=row.version,
                at=self.clock(),
                message_id=None,
                message_type=f"operator:{action}",
                outcome=f"operator-{action}",
                from_state=row.state,
                to_state=row.state,
                commands=[],
                actor=f"operator:{operator}",
                note=note,
            )
        )


async def _lock_saga(conn: AsyncConnection, saga_id: uuid.UUID) -> Any:
    row = (
        await conn.execute(select(instances).where(instances.c.id == saga_id).with_for_update())
    ).one()
    if row.finished_at is not None:
        raise OperatorRefused(f"saga is already {row.state}: it has no timers")
    return row


async def _no_such_timer(conn: AsyncConnection, saga_id: uuid.UUID, name: str) -> OperatorRefused:
    names = (
        (await conn.execute(select(timers.c.name).where(timers.c.saga_id == saga_id)))
        .scalars()
        .all()
    )
    shown = name if len(name) <= MAX_TIMER_NAME else name[: MAX_TIMER_NAME - 3] + "..."
    others = ", ".join(sorted(names)) or "none"
    return OperatorRefused(f"saga has no timer {shown!r} (its timers: {others})")
