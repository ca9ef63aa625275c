"""Migrate running sagas to another version of their workflow: survey first, then in batches.

`survey` reads every matching saga (keyset pages of `batch_size`) and counts what `migrate`
would do, per version and per outcome, without changing anything. `migrate` walks the same
sagas and moves each one in a transaction of its own: the row is locked, the checks are made
again on what it holds now (a message may have moved it since the survey), and a saga that
passes gets its new state and definition version, a new row version (a step decided meanwhile
from the old definition then loses its compare-and-swap and is decided again under the new
one) and a history entry with the operator, the reason and `v1 → v2`. Its timers, the commands
it awaits and its compensation stack stay as they are: the checks made sure they mean the
same under the target version. The checks themselves are orchestrator.migration_checks'.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.admin import check_request
from orchestrator.engine.model import RuntimeState
from orchestrator.engine.registry import Workflows
from orchestrator.engine.versioning import definition_hash
from orchestrator.migration_checks import (
    MigrationRequest,
    Report,
    SagaFacts,
    judge,
    new_report,
)
from orchestrator.store.saga_store import Clock, utcnow
from orchestrator.store.tables import history, instances, outbox, timers

log = logging.getLogger("sagaline.migrate")

MIGRATED = "migrated"
TRIGGER = "operator:migrate"


class SagaMigrator:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow, batch_size: int = 100):
        self.engine = engine
        self.clock = clock
        self.batch_size = batch_size

    async def survey(self, request: MigrationRequest) -> Report:
        """What `migrate` would do now: counts per version and outcome; nothing changes."""
        report = new_report(request)
        report.already = await self._already(request)
        async for page in self._pages(request):
            for saga in page:
                report.count(saga, judge(request, saga))
        return report

    async def migrate(
        self,
        request: MigrationRequest,
        operator: str,
        reason: str,
        *,
        limit: int | None = None,
        on_batch: Callable[[Report], None] | None = None,
    ) -> Report:
        """Move every matching saga that passes the checks (at most `limit`), a page of
        `batch_size` at a time and one transaction each; the report counts what was moved and
        what was blocked, and why."""
        operator, reason = check_request(operator, reason)
        report = new_report(request)
        report.already = await self._already(request)
        async for page in self._pages(request):
            for saga in page:
                if limit is not None and report.migrated >= limit:
                    break
                await self._migrate_one(saga.saga_id, request, operator, reason, report)
            if on_batch is not None:
                on_batch(report)
            if limit is not None and report.migrated >= limit:
                break
        log.info(
            "sagas migrated",
            extra={
                "workflow": request.workflow,
                "to_version": request.to_version,
                "migrated": report.migrated,
                "blocked": report.blocked,
                "operator": operator,
            },
        )
        return report

    async def _migrate_one(
        self,
        saga_id: uuid.UUID,
        request: MigrationRequest,
        operator: str,
        reason: str,
        report: Report,
    ) -> None:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(instances).where(instances.c.id == saga_id).with_for_update()
                )
            ).one()
            if row.finished_at is not None or row.definition_version == request.to_version:
                report.changed_meanwhile += 1
                return
            (saga,) = await _facts(conn, [row])
            verdict = judge(request, saga)
            report.count(saga, verdict)
            if verdict.outcome != "migrate":
                return
            version = row.version + 1
            await conn.execute(
                update(instances)
                .where(instances.c.id == saga_id)
                .values(
                    state=verdict.to_state,
                    definition_version=request.to_version,
                    version=version,
                )
            )
            move = f"{request.workflow} v{row.definition_version} → v{request.to_version}"
            await conn.execute(
                history.insert().values(
                    saga_id=saga_id,
                    version=version,
                    at=self.clock(),
                    message_id=None,
                    message_type=TRIGGER,
                    outcome=MIGRATED,
                    from_state=row.state,
                    to_state=verdict.to_state,
                    commands=[],
                    actor=f"operator:{operator}",
                    note=f"migrate by {operator}: {reason} ({move})",
                )
            )
        report.migrated += 1

    async def _already(self, request: MigrationRequest) -> int:
        query = _matching(select(func.count()).select_from(instances), request, at_target=True)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    async def _pages(self, request: MigrationRequest) -> AsyncIterator[list[SagaFacts]]:
        """Matching sagas in id order, a page per short read (no transaction stays open while
        the caller migrates a page; migrated sagas no longer match, the keyset goes on)."""
        after: uuid.UUID | None = None
        while True:
            query = _matching(select(instances), request, at_target=False)
            if after is not None:
                query = query.where(instances.c.id > after)
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(query.order_by(instances.c.id).limit(self.batch_size))
                ).all()
                if not rows:
                    return
                page = await _facts(conn, rows)
            yield page
            after = rows[-1].id


def _matching(query: Select[Any], request: MigrationRequest, *, at_target: bool) -> Select[Any]:
    """Running sagas of the workflow (on or off the target version) that match `--where`."""
    c = instances.c
    version_test = (
        c.definition_version == request.to_version
        if at_target
        else c.definition_version != request.to_version
    )
    query = query.where(c.workflow == request.workflow, c.finished_at.is_(None), version_test)
    where = request.where
    if where.states:
        query = query.where(c.state.in_(where.states))
    if where.versions:
        query = query.where(c.definition_version.in_(where.versions))
    if where.keys:
        query = query.where(or_(*(_key_test(k) for k in where.keys)))
    return query


def _key_test(key: str) -> Any:
    if key.endswith("*"):
        prefix = key[:-1]
        # startswith on the text itself (no LIKE pattern: a key may hold % or _).
        return func.left(instances.c.business_key, len(prefix)) == prefix
    return instances.c.business_key == key


async def _facts(conn: AsyncConnection, rows: list[Any]) -> list[SagaFacts]:
    """Each saga's row with the names of its timers and the types of the commands it awaits."""
    ids = [row.id for row in rows]
    runtimes = {row.id: RuntimeState.from_json(row.runtime) for row in rows}
    awaited = [m for runtime in runtimes.values() for m in runtime.outstanding]
    timer_rows = (
        await conn.execute(select(timers.c.saga_id, timers.c.name).where(timers.c.saga_id.in_(ids)))
    ).all()
    types = dict(
        (
            await conn.execute(
                select(outbox.c.message_id, outbox.c.message_type).where(
                    outbox.c.message_id.in_(awaited)
                )
            )
        ).all()
        if awaited
        else []
    )
    return [
        SagaFacts(
            saga_id=row.id,
            state=row.state,
            definition_version=row.definition_version,
            data=dict(row.data),
            runtime=runtimes[row.id],
            timers=tuple(sorted(t.name for t in timer_rows if t.saga_id == row.id)),
            awaited=tuple(types.get(m) for m in sorted(runtimes[row.id].outstanding)),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class VersionUse:
    """One version of a workflow: whether this build loads it, and how many sagas still run
    under it (the drain report: a version nothing runs under can be retired)."""

    workflow: str
    version: int
    hash: str | None
    """None: this build does not load the version (its sagas cannot move until it is deployed
    again or they are migrated)."""
    newest: bool
    running: int
    oldest_started: datetime | None

    def as_dict(self) -> dict[str, Any]:
        value = asdict(self)
        value["oldest_started"] = self.oldest_started.isoformat() if self.oldest_started else None
        return value


async def drain_report(engine: AsyncEngine, workflows: Workflows) -> list[VersionUse]:
    """Running sagas per workflow version, every loaded version listed (0 when drained)."""
    c = instances.c
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(c.workflow, c.definition_version, func.count(), func.min(c.created_at))
                .where(c.finished_at.is_(None))
                .group_by(c.workflow, c.definition_version)
            )
        ).all()
    return version_uses(workflows, {(r[0], r[1]): (r[2], r[3]) for r in rows})


def version_uses(
    workflows: Workflows, running: dict[tuple[str, int], tuple[int, datetime]]
) -> list[VersionUse]:
    keys = {(m.name, m.version) for m in workflows.machines()} | set(running)
    uses = []
    for workflow, version in sorted(keys):
        machine = workflows.version(workflow, version)
        count, oldest = running.get((workflow, version), (0, None))
        uses.append(
            VersionUse(
                workflow,
                version,
                definition_hash(machine) if machine is not None else None,
                machine is not None and machine is workflows.get(workflow),
                count,
                oldest,
            )
        )
    return uses
