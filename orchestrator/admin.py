"""Operator tools on sagas: look one up, find the stuck ones, retry, skip, compensate, abort.

Reading never locks anything. Abort, compensate and skip are engine decisions applied by the
store like any other step (one transaction, history row with the operator as actor). Retry is
not a decision: it re-sends the commands the saga already waits for, under their original
message ids, so workers that handled them return their stored reply instead of acting twice.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.engine import Incoming, OperatorRefused, OperatorRequest, RuntimeState
from orchestrator.store.saga_store import NOTIFY_CHANNEL, SagaStore
from orchestrator.store.tables import history, instances, outbox, timers
from sagaline.messaging.errors import ReportableError

log = logging.getLogger("sagaline.admin")

Action = Literal["abort", "compensate", "skip"]
MAX_REASON = 500
MAX_OPERATOR = 100
RETRY_OUTCOME = "operator-retry"


class SagaNotFound(ReportableError):
    """No saga has this id or business key (or the key is ambiguous)."""


class InvalidRequest(ReportableError):
    """An operator request that is malformed before any saga is looked at."""


@dataclass(frozen=True)
class OutstandingCommand:
    message_id: uuid.UUID
    type: str | None
    """None when its outbox row is gone (pruned): the id alone is still what the saga awaits."""
    created_at: datetime | None
    published_at: datetime | None
    """None: not yet published (the relay has it queued)."""


@dataclass(frozen=True)
class PendingTimer:
    name: str
    due_at: datetime
    message_id: uuid.UUID


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    version: int
    message_type: str
    message_id: uuid.UUID | None
    outcome: str
    from_state: str | None
    to_state: str
    commands: list[dict[str, Any]]
    actor: str
    note: str


@dataclass(frozen=True)
class SagaSummary:
    id: uuid.UUID
    workflow: str
    business_key: str
    state: str
    version: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    idle_seconds: float
    """Seconds since the saga last changed (its updated_at), as of the query."""
    definition_version: int = 1
    """The version of its workflow it runs under (`version` counts its steps)."""

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class SagaView:
    summary: SagaSummary
    data: dict[str, Any]
    reason: str | None
    compensation_target: str | None
    outstanding: list[OutstandingCommand] = field(default_factory=list)
    compensations: list[dict[str, Any]] = field(default_factory=list)
    """The stack, bottom first: the last entry is undone first."""
    timers: list[PendingTimer] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Flat: the summary's fields first, then the details (`jq .state` just works)."""
        details = _as_dict(self)
        return {**details.pop("summary"), **details}


@dataclass(frozen=True)
class ActionResult:
    saga_id: uuid.UUID
    action: str
    operator: str
    from_state: str | None
    to_state: str
    commands: list[dict[str, Any]]
    """What the action sent (re-sent, for retry): type and message id of each."""

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self)


class SagaAdmin:
    def __init__(self, engine: AsyncEngine, store: SagaStore) -> None:
        self.engine = engine
        self.store = store

    # --- reading -----------------------------------------------------------------------------

    async def resolve(self, ref: str) -> uuid.UUID:
        """A saga id, or the business key of exactly one saga (e.g. an order id)."""
        ref = ref.strip()
        async with self.engine.connect() as conn:
            as_id = _uuid_or_none(ref)
            if as_id is not None:
                found = await conn.scalar(select(instances.c.id).where(instances.c.id == as_id))
                if found is not None:
                    return as_id
            rows = (
                await conn.execute(
                    select(instances.c.id, instances.c.workflow)
                    .where(instances.c.business_key == ref)
                    .order_by(instances.c.workflow)
                    .limit(10)
                )
            ).all()
        if len(rows) == 1:
            return uuid.UUID(str(rows[0].id))
        shown = ref if len(ref) <= 80 else ref[:77] + "..."
        if rows:
            workflows = ", ".join(row.workflow for row in rows)
            raise SagaNotFound(
                f"business key {shown!r} names sagas of several workflows ({workflows}); "
                "use the saga id"
            )
        raise SagaNotFound(f"no saga with id or business key {shown!r}")

    async def show(self, ref: str) -> SagaView:
        saga_id = await self.resolve(ref)
        now = self.store.clock()
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(instances).where(instances.c.id == saga_id))).one()
            runtime = RuntimeState.from_json(row.runtime)
            outstanding = await _outstanding(conn, runtime.outstanding)
            pending = (
                await conn.execute(
                    select(timers.c.name, timers.c.due_at, timers.c.message_id)
                    .where(timers.c.saga_id == saga_id)
                    .order_by(timers.c.due_at)
                )
            ).all()
            entries = (
                await conn.execute(
                    select(history).where(history.c.saga_id == saga_id).order_by(history.c.id)
                )
            ).all()
        return SagaView(
            summary=_summary(row, now),
            data=dict(row.data),
            reason=runtime.reason,
            compensation_target=runtime.compensation_target,
            outstanding=outstanding,
            compensations=[c.to_json() for c in runtime.compensations],
            timers=[PendingTimer(t.name, t.due_at, t.message_id) for t in pending],
            history=[
                HistoryEntry(
                    at=e.at,
                    version=e.version,
                    message_type=e.message_type,
                    message_id=e.message_id,
                    outcome=e.outcome,
                    from_state=e.from_state,
                    to_state=e.to_state,
                    commands=list(e.commands),
                    actor=e.actor,
                    note=e.note,
                )
                for e in entries
            ],
        )

    async def list(
        self,
        *,
        workflow: str | None = None,
        state: str | None = None,
        stuck_for: timedelta | None = None,
        active: bool = False,
        limit: int = 50,
    ) -> builtins.list[SagaSummary]:
        """Sagas, most recently changed first; with `stuck_for`, unfinished ones that have not
        changed for at least that long, longest-idle first."""
        now = self.store.clock()
        query = select(instances)
        if workflow is not None:
            query = query.where(instances.c.workflow == workflow)
        if state is not None:
            query = query.where(instances.c.state == state)
        if active or stuck_for is not None:
            # Matches the partial index ix_instances_active (finished_at IS NULL).
            query = query.where(instances.c.finished_at.is_(None))
        if stuck_for is not None:
            query = query.where(instances.c.updated_at <= now - stuck_for)
            query = query.order_by(instances.c.updated_at, instances.c.id)
        else:
            query = query.order_by(instances.c.updated_at.desc(), instances.c.id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [_summary(row, now) for row in rows]

    # --- acting ------------------------------------------------------------------------------

    async def retry(self, ref: str, operator: str, reason: str) -> ActionResult:
        """Re-send every command the saga awaits, with the same message ids.

        Resetting published_at hands the rows back to the outbox relay; the NOTIFY (delivered
        at commit) wakes it at once. The saga row is locked for the transaction: a step racing
        on the saga waits for it, so the history keeps the order in which things happened.
        """
        operator, reason = check_request(operator, reason)
        saga_id = await self.resolve(ref)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(instances).where(instances.c.id == saga_id).with_for_update()
                )
            ).one()
            if row.finished_at is not None:
                raise OperatorRefused(f"saga is already {row.state}")
            awaited = RuntimeState.from_json(row.runtime).outstanding
            if not awaited:
                raise OperatorRefused(
                    f"nothing to retry: in {row.state} the saga waits for no command"
                )
            resent = (
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.message_id.in_(awaited))
                    .values(published_at=None, dispatch_until=None)  # the relay's, at once
                    .returning(outbox.c.message_id, outbox.c.message_type)
                )
            ).all()
            if not resent:
                raise OperatorRefused("the awaited commands are no longer in the outbox")
            commands = sorted(
                ({"type": r.message_type, "message_id": str(r.message_id)} for r in resent),
                key=lambda c: c["message_id"],
            )
            await conn.execute(
                history.insert().values(
                    saga_id=saga_id,
                    version=row.version,
                    at=self.store.clock(),
                    message_id=None,
                    message_type="operator:retry",
                    outcome=RETRY_OUTCOME,
                    from_state=row.state,
                    to_state=row.state,
                    commands=[{**c, "kind": "command"} for c in commands],
                    actor=f"operator:{operator}",
                    note=f"retry by {operator}: {reason}",
                )
            )
            await conn.execute(text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"))
        _log_action("retry", saga_id, operator, row.state, row.state)
        return ActionResult(saga_id, "retry", operator, row.state, row.state, commands)

    async def act(
        self,
        ref: str,
        action: Action,
        operator: str,
        reason: str,
        to_state: str | None = None,
    ) -> ActionResult:
        """Abort, compensate or skip through the engine; OperatorRefused says why not."""
        operator, reason = check_request(operator, reason)
        saga_id = await self.resolve(ref)
        request = OperatorRequest(
            action=action, operator=operator, reason=reason, to_state=to_state
        )
        result = await self.store.handle(
            Incoming.from_operator(saga_id, request), actor=f"operator:{operator}"
        )
        decision = result.decision
        assert decision is not None  # a fresh message id is never an inbox duplicate
        _log_action(action, saga_id, operator, decision.from_state, decision.to_state)
        commands = [
            {"type": o.message.message_type, "message_id": str(o.message_id), "kind": o.kind}
            for o in decision.outgoing
        ]
        return ActionResult(
            saga_id, action, operator, decision.from_state, decision.to_state, commands
        )

    async def abort(self, ref: str, operator: str, reason: str) -> ActionResult:
        return await self.act(ref, "abort", operator, reason)

    async def compensate(self, ref: str, operator: str, reason: str) -> ActionResult:
        return await self.act(ref, "compensate", operator, reason)

    async def skip(
        self, ref: str, operator: str, reason: str, to_state: str | None = None
    ) -> ActionResult:
        return await self.act(ref, "skip", operator, reason, to_state)


async def _outstanding(
    conn: AsyncConnection, awaited: frozenset[uuid.UUID]
) -> list[OutstandingCommand]:
    if not awaited:
        return []
    rows = {
        r.message_id: r
        for r in (
            await conn.execute(
                select(
                    outbox.c.message_id,
                    outbox.c.message_type,
                    outbox.c.created_at,
                    outbox.c.published_at,
                ).where(outbox.c.message_id.in_(awaited))
            )
        ).all()
    }
    result = []
    for message_id in sorted(awaited):
        r = rows.get(message_id)
        result.append(
            OutstandingCommand(
                message_id,
                r.message_type if r else None,
                r.created_at if r else None,
                r.published_at if r else None,
            )
        )
    return result


def _summary(row: Any, now: datetime) -> SagaSummary:
    return SagaSummary(
        id=row.id,
        workflow=row.workflow,
        business_key=row.business_key,
        state=row.state,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        idle_seconds=max((now - row.updated_at).total_seconds(), 0.0),
        definition_version=row.definition_version,
    )


def check_request(operator: str, reason: str) -> tuple[str, str]:
    """Who and why go into the audit trail: both required, one line each, bounded."""
    operator = operator.strip()
    reason = " ".join(reason.split())
    if not operator or len(operator) > MAX_OPERATOR or any(c.isspace() for c in operator):
        raise InvalidRequest(f"operator name must be 1-{MAX_OPERATOR} characters without spaces")
    if not reason:
        raise InvalidRequest("a reason is required (it is recorded in the saga's history)")
    if len(reason) > MAX_REASON:
        raise InvalidRequest(f"the reason is longer than {MAX_REASON} characters")
    return operator, reason


def _log_action(
    action: str, saga_id: uuid.UUID, operator: str, from_state: str | None, to_state: str
) -> None:
    # The reason is in the saga's history; logs keep to ids and states.
    log.info(
        "operator action",
        extra={
            "action": action,
            "saga_id": str(saga_id),
            "operator": operator,
            "from_state": from_state,
            "to_state": to_state,
        },
    )


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _as_dict(instance: Any) -> dict[str, Any]:
    return {key: _plain(value) for key, value in asdict(instance).items()}


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO-8601, UUIDs as text, containers recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value
