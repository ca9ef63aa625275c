"""What the pages show, read from PostgreSQL: each query is sized for 1M sagas and 100,000
parked messages (sagaline_tools/bench/console.py measures them), using the indexes the hot
path already has (no index was added to the saga tables for the console: every index there
costs each saga step) and the parked index's own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.tables import instances, outbox, timers
from sagaline_tools.console.tables import approvals, audit, parked, replay_jobs

PAGE = 50


@dataclass(frozen=True)
class Overview:
    active: list[tuple[str, str, int]]
    """(workflow, state, unfinished sagas)"""
    stuck: list[tuple[str, str, int]]
    parked: list[tuple[str, str, int]]
    """(queue, reason, copies)"""
    outbox_backlog: int
    outbox_oldest: datetime | None
    timers_due: int
    jobs_running: int
    approvals_pending: int


async def overview(engine: AsyncEngine, now: datetime, stuck_after: timedelta) -> Overview:
    active_q = (
        select(instances.c.workflow, instances.c.state, func.count())
        .where(instances.c.finished_at.is_(None))
        .group_by(instances.c.workflow, instances.c.state)
        .order_by(instances.c.workflow, instances.c.state)
    )
    stuck_q = active_q.where(instances.c.updated_at <= now - stuck_after)
    parked_q = (
        select(parked.c.queue, parked.c.reason, func.sum(parked.c.copies))
        .group_by(parked.c.queue, parked.c.reason)
        .order_by(parked.c.queue, parked.c.reason)
    )
    async with engine.connect() as conn:
        active = [(w, s, int(n)) for w, s, n in (await conn.execute(active_q)).all()]
        stuck = [(w, s, int(n)) for w, s, n in (await conn.execute(stuck_q)).all()]
        parked_rows = [(q, r, int(n)) for q, r, n in (await conn.execute(parked_q)).all()]
        backlog, oldest = (
            await conn.execute(
                select(func.count(), func.min(outbox.c.created_at)).where(
                    outbox.c.published_at.is_(None)
                )
            )
        ).one()
        due = await conn.scalar(select(func.count()).where(timers.c.due_at <= now))
        jobs = await conn.scalar(select(func.count()).where(replay_jobs.c.status == "running"))
        pending = await conn.scalar(select(func.count()).where(approvals.c.status == "pending"))
    return Overview(
        active, stuck, parked_rows, int(backlog), oldest, int(due or 0), int(jobs or 0),
        int(pending or 0),
    )  # fmt: skip


@dataclass(frozen=True)
class SagaFilter:
    workflow: str | None = None
    state: str | None = None
    key: str | None = None
    stuck_for: timedelta | None = None
    active: bool = False
    older_than: timedelta | None = None
    """Created at least this long ago (age)."""


async def search_sagas(
    engine: AsyncEngine,
    f: SagaFilter,
    now: datetime,
    workflows: list[str],
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[Any]:
    """One page, most recently changed first (stuck: longest idle first); keyset paging."""
    query: Select[Any] = select(
        instances.c.id, instances.c.workflow, instances.c.business_key, instances.c.state,
        instances.c.created_at, instances.c.updated_at, instances.c.finished_at,
    )  # fmt: skip
    if f.key:
        # Exact key: the unique (workflow, business_key) index, probed once per workflow.
        as_id = _uuid(f.key)
        by_key = tuple_(instances.c.workflow, instances.c.business_key).in_(
            [(w, f.key) for w in workflows]
        )
        query = query.where(or_(by_key, instances.c.id == as_id) if as_id else by_key)
    if f.workflow:
        query = query.where(instances.c.workflow == f.workflow)
    if f.state:
        query = query.where(instances.c.state == f.state)
    if f.active or f.stuck_for:
        query = query.where(instances.c.finished_at.is_(None))
    if f.older_than:
        query = query.where(instances.c.created_at <= now - f.older_than)
    oldest_first = f.stuck_for is not None
    if f.stuck_for:
        query = query.where(instances.c.updated_at <= now - f.stuck_for)
    key = (instances.c.updated_at, instances.c.id)
    if after is not None:
        if oldest_first:
            query = query.where(tuple_(*key) > tuple_(*after))
        else:
            query = query.where(
                or_(
                    instances.c.updated_at < after[0],
                    and_(instances.c.updated_at == after[0], instances.c.id > after[1]),
                )
            )
    if oldest_first:
        query = query.order_by(instances.c.updated_at, instances.c.id)
    else:
        query = query.order_by(instances.c.updated_at.desc(), instances.c.id)
    async with engine.connect() as conn:
        return list((await conn.execute(query.limit(PAGE))).all())


@dataclass(frozen=True)
class Group:
    queue: str
    reason: str
    fingerprint: str
    pattern: str
    copies: int
    first_parked: datetime
    last_parked: datetime
    types: str


async def groups(engine: AsyncEngine) -> list[Group]:
    query = (
        select(
            parked.c.queue, parked.c.reason, parked.c.fingerprint, func.min(parked.c.error_pattern),
            func.sum(parked.c.copies), func.min(parked.c.parked_at), func.max(parked.c.parked_at),
            func.string_agg(func.distinct(func.coalesce(parked.c.message_type, "?")), ", "),
        )
        .group_by(parked.c.queue, parked.c.reason, parked.c.fingerprint)
        .order_by(func.sum(parked.c.copies).desc(), parked.c.queue, parked.c.reason)
    )  # fmt: skip
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [Group(q, r, f, p, int(n), a, b, t) for q, r, f, p, n, a, b, t in rows]


@dataclass(frozen=True)
class ParkedFilter:
    queue: str | None = None
    reason: str | None = None
    fingerprint: str | None = None
    saga_id: uuid.UUID | None = None

    def where(self) -> list[Any]:
        clauses = []
        if self.queue:
            clauses.append(parked.c.queue == self.queue)
        if self.reason:
            clauses.append(parked.c.reason == self.reason)
        if self.fingerprint:
            clauses.append(parked.c.fingerprint == self.fingerprint)
        if self.saga_id:
            clauses.append(parked.c.saga_id == self.saga_id)
        return clauses


LISTED = [
    parked.c.id, parked.c.queue, parked.c.message_key, parked.c.replays, parked.c.copies,
    parked.c.message_id, parked.c.saga_id, parked.c.message_type, parked.c.reason,
    parked.c.error, parked.c.attempts, parked.c.parked_at, parked.c.last_failed_at,
    parked.c.fingerprint, parked.c.original_queue,
]  # fmt: skip


async def parked_page(
    engine: AsyncEngine, f: ParkedFilter, before_id: int | None = None, limit: int = PAGE
) -> list[Any]:
    """Newest first, keyset-paged by id."""
    query = select(*LISTED).where(*f.where())
    if before_id is not None:
        query = query.where(parked.c.id < before_id)
    async with engine.connect() as conn:
        return list((await conn.execute(query.order_by(parked.c.id.desc()).limit(limit))).all())


async def parked_count(engine: AsyncEngine, f: ParkedFilter) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.coalesce(func.sum(parked.c.copies), 0)).where(*f.where())
        )
    return int(value or 0)


async def parked_selection(
    engine: AsyncEngine, f: ParkedFilter, ids: list[int] | None
) -> list[Any]:
    """The rows a replay or purge would take: chosen ids, else the whole filter (a group)."""
    query = select(*LISTED)
    query = query.where(parked.c.id.in_(ids)) if ids else query.where(*f.where())
    async with engine.connect() as conn:
        return list((await conn.execute(query.order_by(parked.c.id))).all())


async def parked_message(engine: AsyncEngine, row_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(parked).where(parked.c.id == row_id))).first()


async def saga_audit(engine: AsyncEngine, saga_id: uuid.UUID) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(audit).where(audit.c.saga_id == saga_id).order_by(audit.c.id)
                )
            ).all()
        )


async def recent_audit(engine: AsyncEngine, limit: int = 100) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(select(audit).order_by(audit.c.id.desc()).limit(limit))).all()
        )


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
