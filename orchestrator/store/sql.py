"""Write a planned batch of saga steps in one transaction, with raw asyncpg statements.

Every statement handles the whole batch (unnest of arrays), so a batch of 64 steps costs about
as many round trips as one step. The hot path uses asyncpg directly: SQLAlchemy Core costs
2-3x per step here (measured: ~1.5-1.8 ms of Python per step against ~0.4 ms). Connections
come from SQLAlchemy's pool, so the process keeps one pool; asyncpg's jsonb codec there takes
JSON text and returns Python values.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.engine import Incoming, RuntimeState, SagaSnapshot
from orchestrator.store.plan import Plan

NOTIFY_CHANNEL = "sagaline_outbox"


class ConcurrencyConflict(Exception):
    """Another transaction changed a saga between our read and our write."""


_INBOX = """
INSERT INTO saga.inbox (message_id, saga_id, message_type, received_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING message_id
"""

# Statements that find rows by an array of keys probe the key's index once per element: a
# LATERAL subquery that cannot be flattened (OFFSET 0, or FOR UPDATE) is always a nested loop
# over the array. `= ANY($1)` or a join with unnest leaves the access path to the planner, which
# on tables never analyzed (autovacuum off, a bulk load, a fresh deploy) estimates 64 index
# probes dearer than one sequential scan, and keeps that choice in the generic plan of a
# prepared statement long after the table grew. The keys arm keeps the cross product of
# workflows and keys (a saga matching both is returned once: its id is not in $1).
_LOAD = """
SELECT i.* FROM unnest($1::uuid[]) AS k(id)
CROSS JOIN LATERAL (
    SELECT id, workflow, business_key, state, data, runtime, version, updated_at, finished_at,
        definition_version
    FROM saga.instances WHERE id = k.id OFFSET 0) AS i
UNION ALL
SELECT i.* FROM unnest($3::text[]) AS w(workflow) CROSS JOIN unnest($2::text[]) AS k(business_key)
CROSS JOIN LATERAL (
    SELECT id, workflow, business_key, state, data, runtime, version, updated_at, finished_at,
        definition_version
    FROM saga.instances
    WHERE workflow = w.workflow AND business_key = k.business_key AND NOT id = ANY($1::uuid[])
    OFFSET 0) AS i
"""

_INSERT = """
INSERT INTO saga.instances
    (id, workflow, business_key, state, data, runtime, version, created_at, updated_at,
     finished_at, definition_version)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[],
                     $7::int[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
                     $11::int[])
ON CONFLICT DO NOTHING
RETURNING id
"""

# One row per saga the batch touched, at the version it was read: sagas whose steps changed
# nothing still take part, so a decision made from a stale read is detected and redone.
_UPDATE = """
UPDATE saga.instances AS i
SET state = v.state, data = v.data, runtime = v.runtime, version = v.version,
    updated_at = v.updated_at, finished_at = v.finished_at
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::jsonb[], $6::int[],
            $7::timestamptz[], $8::timestamptz[])
     AS v(id, expected, state, data, runtime, version, updated_at, finished_at)
WHERE i.id = v.id AND i.version = v.expected
"""

_HOLD = """
UPDATE saga.instances AS i SET version = i.version
FROM unnest($1::uuid[], $2::int[]) AS v(id, expected)
WHERE i.id = v.id AND i.version = v.expected
"""

_HISTORY = """
INSERT INTO saga.history
    (saga_id, version, at, message_id, message_type, outcome, from_state, to_state, commands,
     actor, note)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::uuid[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::text[])
"""

_OUTBOX = """
INSERT INTO saga.outbox
    (message_id, saga_id, exchange, routing_key, message_type, body, headers, created_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[],
                     $7::jsonb[], $8::timestamptz[])
"""

_TIMERS_SET = """
INSERT INTO saga.timers (saga_id, name, message_id, due_at, created_at)
SELECT s, n, m, d, $5 FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[])
     AS t(s, n, m, d)
ON CONFLICT (saga_id, name) DO UPDATE
SET message_id = excluded.message_id, due_at = excluded.due_at
"""

# A DELETE's target cannot be driven by a LATERAL subquery, so the rows are found by one (one
# index probe per key, locking each row as the DELETE would) and deleted by their ctid: a TID
# scan on any table past a few pages, statistics or not. The lock keeps each ctid current.
_TIMERS_CANCEL = """
DELETE FROM saga.timers
WHERE ctid = ANY(ARRAY(
    SELECT t.ctid FROM unnest($1::uuid[], $2::text[]) AS c(saga_id, name)
    CROSS JOIN LATERAL (
        SELECT ctid FROM saga.timers WHERE saga_id = c.saga_id AND name = c.name FOR UPDATE
    ) AS t))
"""

_TIMERS_FINISHED = """
DELETE FROM saga.timers
WHERE ctid = ANY(ARRAY(
    SELECT t.ctid FROM unnest($1::uuid[]) AS f(saga_id)
    CROSS JOIN LATERAL (SELECT ctid FROM saga.timers WHERE saga_id = f.saga_id FOR UPDATE) AS t))
"""

_INBOX_FORGET = "DELETE FROM saga.inbox WHERE message_id = ANY($1::uuid[])"

# `ctid = ANY(ARRAY(...))` is a TID scan; `ctid IN (subquery)` was planned as a hash join over
# a sequential scan of every timer.
CLAIM_DUE_TIMERS = """
DELETE FROM saga.timers
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM saga.timers WHERE due_at <= $1
    ORDER BY due_at, saga_id LIMIT $2 FOR UPDATE SKIP LOCKED))
RETURNING saga_id, name, message_id, due_at
"""


async def claim_inbox(
    conn: asyncpg.Connection, incomings: Sequence[Incoming], now: datetime
) -> list[bool]:
    """Insert every message id; True where the id is new (first occurrence in the batch)."""
    seen: set[uuid.UUID] = set()
    unique = []
    for incoming in incomings:
        if incoming.message_id not in seen:
            seen.add(incoming.message_id)
            unique.append(incoming)
    rows = await conn.fetch(
        _INBOX,
        [i.message_id for i in unique],
        [i.saga_id for i in unique],
        [i.trigger for i in unique],
        [now] * len(unique),
    )
    fresh_ids = {r["message_id"] for r in rows}
    fresh = []
    for incoming in incomings:
        fresh.append(incoming.message_id in fresh_ids)
        fresh_ids.discard(incoming.message_id)  # a second copy in the same batch is a duplicate
    return fresh


async def load(
    conn: asyncpg.Connection, saga_ids: set[uuid.UUID], keys: set[tuple[str, str]]
) -> tuple[dict[uuid.UUID, SagaSnapshot], dict[tuple[str, str], uuid.UUID]]:
    """Sagas by id, plus the owners of the business keys that starting events claim."""
    rows = await conn.fetch(
        _LOAD,
        list(saga_ids),
        sorted({k for _, k in keys}),  # distinct: each key is one probe per workflow
        sorted({w for w, _ in keys}),
    )
    snapshots = {}
    owners = {}
    for row in rows:
        snapshot = SagaSnapshot(
            saga_id=row["id"],
            workflow=row["workflow"],
            business_key=row["business_key"],
            state=row["state"],
            data=dict(row["data"]),
            runtime=RuntimeState.from_json(row["runtime"]),
            version=row["version"],
            finished=row["finished_at"] is not None,
            updated_at=row["updated_at"],
            definition_version=row["definition_version"],
        )
        snapshots[snapshot.saga_id] = snapshot
        if (snapshot.workflow, snapshot.business_key) in keys:
            owners[(snapshot.workflow, snapshot.business_key)] = snapshot.saga_id
    return snapshots, owners


async def write(conn: asyncpg.Connection, plan: Plan, *, notify_relay: bool = True) -> None:
    """Apply the plan; ConcurrencyConflict when any saga moved since it was loaded.

    `notify_relay` wakes the outbox relay at commit (unless the caller dispatches itself)."""
    if plan.refused_ids:
        # A refused message leaves no trace, so that a replay after a fix can process it.
        await conn.execute(_INBOX_FORGET, plan.refused_ids)
    await _write_sagas(conn, plan)
    if plan.history:
        await conn.execute(_HISTORY, *_columns(plan.history, 11))
    if plan.outbox:
        await conn.execute(_OUTBOX, *_columns(plan.outbox, 8))
        if notify_relay:
            await conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")
    await _write_timers(conn, plan)


async def _write_sagas(conn: asyncpg.Connection, plan: Plan) -> None:
    new_rows: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    holds: list[tuple[uuid.UUID, int]] = []
    for saga_id, slot in plan.slots.items():
        current = slot.current
        if current is None:
            continue
        finished_at = plan.now if current.finished else None
        values = (
            current.state,
            json.dumps(current.data),
            json.dumps(current.runtime.to_json()),
            current.version,
        )
        if slot.loaded is None:
            identity = (saga_id, current.workflow, current.business_key)
            new_rows.append(
                (*identity, *values, plan.now, plan.now, finished_at, current.definition_version)
            )
            continue
        loaded = slot.loaded
        if current is loaded:  # only ignored steps: hold the version, change nothing
            holds.append((saga_id, loaded.version))
            continue
        updates.append((saga_id, loaded.version, *values, current.updated_at, finished_at))
    if new_rows:
        created = await conn.fetch(_INSERT, *_columns(new_rows, 11))
        if len(created) != len(new_rows):
            raise ConcurrencyConflict  # another transaction started one of these sagas first
    for statement, rows, width in ((_UPDATE, updates, 8), (_HOLD, holds, 2)):
        if rows:
            status = await conn.execute(statement, *_columns(rows, width))
            if int(status.split()[-1]) != len(rows):
                raise ConcurrencyConflict


async def _write_timers(conn: asyncpg.Connection, plan: Plan) -> None:
    if plan.finished:
        await conn.execute(_TIMERS_FINISHED, list(plan.finished))
    sets = [(s, n, v[0], v[1]) for (s, n), v in plan.timers.items() if v is not None]
    cancels = [(s, n) for (s, n), v in plan.timers.items() if v is None]
    if sets:
        await conn.execute(_TIMERS_SET, *_columns(sets, 4), plan.now)
    if cancels:
        await conn.execute(_TIMERS_CANCEL, *_columns(cancels, 2))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]
