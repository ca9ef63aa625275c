"""Bulk saga rows shaped like real ones, written with one SQL statement per chunk.

The row shapes come from the engine itself: `order_templates` runs the order workflow's pure
decide step through a successful saga and keeps what the store would have written (saga data
and runtime JSON, one history/inbox/outbox row per step, the step-timeout timer). SQL then
stamps out copies with `generate_series`, giving each a unique business key and deriving every
message id from the saga id (md5), so history rows point at real inbox and outbox rows.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from contracts import order
from contracts.base import ReplyEvent
from contracts.envelope import Envelope, new_envelope
from contracts.topology import Topology
from orchestrator.engine import (
    Decision,
    EngineConfig,
    Incoming,
    SagaSnapshot,
    decide,
)
from orchestrator.workflows.order import machine
from sagaline_tools.bench.workload import submitted

ORDER_PLACEHOLDER = "bench-template-order-0000000"
OUTSTANDING_PLACEHOLDER = "00000000-0000-4000-8000-00000000feed"
CHUNK = 25_000


@dataclass(frozen=True)
class StepRow:
    """One step as the store writes it: its inbox/history row and at most one outgoing message."""

    k: int
    version: int
    message_type: str
    outcome: str
    from_state: str | None
    to_state: str
    out_type: str | None = None
    out_kind: str | None = None
    out_body: bytes | None = None


@dataclass(frozen=True)
class SagaTemplate:
    workflow: str
    state: str
    data: str
    """JSON with ORDER_PLACEHOLDER where the business key goes."""
    runtime: str
    """JSON with OUTSTANDING_PLACEHOLDER where the awaited command's id goes."""
    version: int
    finished: bool
    steps: tuple[StepRow, ...]
    outstanding_step: int | None
    """The step (k) whose outgoing command the saga awaits, if any."""
    timer: str | None
    """Name of the timer a saga in this state has pending."""


def _reply(command: Any, payment_id: str = "pay-template") -> ReplyEvent:
    oid = command.order_id
    if isinstance(command, order.ProcessPayment):
        return order.PaymentProcessed(
            order_id=oid, payment_id=payment_id, amount_cents=command.amount_cents
        )
    if isinstance(command, order.ReserveInventory):
        return order.InventoryReserved(order_id=oid)
    if isinstance(command, order.CreateShipment):
        return order.OrderShipped(order_id=oid, tracking_number="trk-template")
    raise ValueError(f"no template reply for {type(command).__name__}")


def order_templates(now: datetime | None = None) -> tuple[SagaTemplate, SagaTemplate]:
    """(live in awaiting_payment, completed): the order saga after its first and last step."""
    now = now or datetime(2025, 1, 1, tzinfo=UTC)
    config = EngineConfig()
    saga_id = uuid.uuid4()
    event: Envelope[Any] = new_envelope(
        submitted("template", 0).model_copy(update={"order_id": ORDER_PLACEHOLDER}),
        correlation_id=saga_id,
    )
    snapshot: SagaSnapshot | None = None
    steps: list[StepRow] = []
    live: SagaTemplate | None = None
    while True:
        decision = decide(machine, snapshot, Incoming.from_envelope(event), now, config)
        k = len(steps) + 1
        steps.append(_step_row(k, event, decision, saga_id, now))
        snapshot = SagaSnapshot(
            saga_id=saga_id,
            workflow=machine.name,
            business_key=decision.business_key,
            state=decision.to_state,
            data=decision.data,
            runtime=decision.runtime,
            version=decision.version,
            finished=decision.finished,
            updated_at=now,
        )
        template = _template(decision, tuple(steps))
        if live is None:
            live = template
        if decision.finished:
            return live, template
        commands = [o for o in decision.outgoing if o.kind == "command"]
        if len(commands) != 1:
            raise ValueError("the order template expects one command per forward step")
        command = commands[0]
        event = new_envelope(
            _reply(command.message),
            correlation_id=saga_id,
            causation_id=command.message_id,
        )
        if k > 10:  # pragma: no cover - the order workflow finishes in four steps
            raise ValueError("the order template did not finish")


def _step_row(
    k: int, event: Envelope[Any], decision: Decision, saga_id: uuid.UUID, now: datetime
) -> StepRow:
    if len(decision.outgoing) > 1:
        raise ValueError("seeding supports at most one outgoing message per step")
    out = decision.outgoing[0] if decision.outgoing else None
    body = None
    if out is not None:
        body = new_envelope(
            out.message,
            correlation_id=saga_id,
            causation_id=event.message_id,
            message_id=out.message_id,
            occurred_at=now,
        ).to_json()
    return StepRow(
        k=k,
        version=decision.version,
        message_type=event.type,
        outcome=decision.outcome.value,
        from_state=decision.from_state,
        to_state=decision.to_state,
        out_type=out.message.message_type if out else None,
        out_kind=out.kind if out else None,
        out_body=body,
    )


def _template(decision: Decision, steps: tuple[StepRow, ...]) -> SagaTemplate:
    outstanding = sorted(str(m) for m in decision.runtime.outstanding)
    if len(outstanding) > 1:
        raise ValueError("seeding supports at most one outstanding command")
    outstanding_step = None
    runtime = decision.runtime.to_json()
    if outstanding:
        last = steps[-1]
        outstanding_step = last.k
        runtime["outstanding"] = [OUTSTANDING_PLACEHOLDER]
    timers = [t.name for t in decision.timers if t.due_at is not None]
    return SagaTemplate(
        workflow=machine.name,
        state=decision.to_state,
        data=json.dumps(decision.data),
        runtime=json.dumps(runtime),
        version=decision.version,
        finished=decision.finished,
        steps=steps,
        outstanding_step=outstanding_step,
        timer=timers[0] if timers and not decision.finished else None,
    )


def steps_json(template: SagaTemplate, topology: Topology) -> str:
    rows = []
    for step in template.steps:
        exchange = None
        if step.out_kind is not None:
            exchange = (
                topology.commands_exchange
                if step.out_kind == "command"
                else topology.events_exchange
            )
        rows.append(
            {
                "k": step.k,
                "version": step.version,
                "message_type": step.message_type,
                "outcome": step.outcome,
                "from_state": step.from_state,
                "to_state": step.to_state,
                "out_type": step.out_type,
                "out_kind": step.out_kind,
                "out_exchange": exchange,
                "body": base64.b64encode(step.out_body).decode() if step.out_body else None,
            }
        )
    return json.dumps(rows)


# One statement per chunk: ids first (materialised once), then every table from them.
SEED_SQL = """
WITH g AS MATERIALIZED (
    SELECT gen_random_uuid() AS id,
           $1::text || n::text AS key,
           $2::timestamptz - n * interval '1 millisecond' AS ts,
           n
    FROM generate_series($3::bigint, $4::bigint) AS n
),
steps AS (
    SELECT * FROM jsonb_to_recordset($5::jsonb) AS s(
        k int, version int, message_type text, outcome text, from_state text, to_state text,
        out_type text, out_kind text, out_exchange text, body text)
),
saga AS (
    INSERT INTO saga.instances
        (id, workflow, business_key, state, data, runtime, version,
         created_at, updated_at, finished_at)
    SELECT g.id, $6, g.key, $7,
           replace($8::text, $9::text, g.key)::jsonb,
           replace(replace($10::text, $9::text, g.key),
                   $11::text, md5(g.id::text || ':o' || $12::int)::uuid::text)::jsonb,
           $13::int,
           g.ts, g.ts + interval '1 second',
           CASE WHEN $14::bool THEN g.ts + interval '1 second' END
    FROM g
),
inbox AS (
    INSERT INTO saga.inbox (message_id, saga_id, message_type, received_at)
    SELECT md5(g.id::text || ':i' || s.k)::uuid, g.id, s.message_type,
           g.ts + s.k * interval '100 milliseconds'
    FROM g CROSS JOIN steps s
    WHERE $15::bool
),
hist AS (
    INSERT INTO saga.history
        (saga_id, version, at, message_id, message_type, outcome, from_state, to_state,
         commands, actor, note)
    SELECT g.id, s.version, g.ts + s.k * interval '100 milliseconds',
           md5(g.id::text || ':i' || s.k)::uuid, s.message_type, s.outcome, s.from_state,
           s.to_state,
           CASE WHEN s.out_type IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(jsonb_build_object(
               'type', s.out_type,
               'message_id', md5(g.id::text || ':o' || s.k)::uuid,
               'kind', s.out_kind)) END,
           'message', ''
    FROM g CROSS JOIN steps s
    WHERE $15::bool
),
outbox AS (
    INSERT INTO saga.outbox
        (message_id, saga_id, exchange, routing_key, message_type, body, headers,
         created_at, published_at)
    SELECT md5(g.id::text || ':o' || s.k)::uuid, g.id, s.out_exchange, s.out_type, s.out_type,
           convert_to(replace(convert_from(decode(s.body, 'base64'), 'UTF8'), $9::text, g.key),
                      'UTF8'),
           '{}'::jsonb,
           g.ts + s.k * interval '100 milliseconds', g.ts + s.k * interval '100 milliseconds'
    FROM g CROSS JOIN steps s
    WHERE $15::bool AND s.out_type IS NOT NULL
),
timer AS (
    INSERT INTO saga.timers (saga_id, name, message_id, due_at, created_at)
    SELECT g.id, $16::text, md5(g.id::text || ':t')::uuid,
           $17::timestamptz + g.n * interval '1 microsecond', g.ts
    FROM g
    WHERE $16::text IS NOT NULL
)
SELECT count(*) FROM g
"""


async def seed(
    conn: asyncpg.Connection,
    template: SagaTemplate,
    topology: Topology,
    *,
    count: int,
    key_prefix: str,
    with_history: bool,
    timer_due: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> int:
    """Insert `count` sagas like `template`, `chunk` per transaction; returns how many.

    `timer_due` sets the template's pending timer on each saga (None: no timer rows).
    """
    now = datetime.now(UTC)
    steps = steps_json(template, topology)
    done = 0
    while done < count:
        size = min(chunk, count - done)
        inserted = await conn.fetchval(
            SEED_SQL,
            key_prefix,
            now,
            done + 1,
            done + size,
            steps,
            template.workflow,
            template.state,
            template.data,
            ORDER_PLACEHOLDER,
            template.runtime,
            OUTSTANDING_PLACEHOLDER,
            template.outstanding_step or 0,
            template.version,
            template.finished,
            with_history,
            template.timer if timer_due is not None else None,
            timer_due,
        )
        done += int(inserted)
        if progress is not None:
            progress(done)
    return done


async def vacuum_analyze(conn: asyncpg.Connection) -> None:
    """What autovacuum would have done to tables that grew over months, then a checkpoint so
    that writing back the bulk load does not land inside the measurement."""
    await conn.execute(
        "VACUUM (ANALYZE) saga.instances, saga.inbox, saga.history, saga.outbox, saga.timers"
    )
    await conn.execute("CHECKPOINT")


def due_in_past(seconds: float = 60.0) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def due_in_future(days: float = 1.0) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)
