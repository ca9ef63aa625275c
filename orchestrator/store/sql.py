"""Read a batch's sagas in one statement, write its planned steps in one call, with asyncpg.

Every statement handles the whole batch (unnest of arrays), so a batch of 64 steps costs about
as many round trips as one step. A step is two round trips: `read` (which messages were seen
before, and the sagas), then `write`: one call of a PL/pgSQL function, made of the statements
below, that runs as its own transaction (or inside the caller's). Each round trip costs 0.3-0.9
ms here when the backend idled while Python planned (README, Benchmark), and the eight or more
of BEGIN, inbox, read, writes and COMMIT were most of a step's time in the database.

No locks are held between the read and the write: the write checks what the read saw. Every
saga is updated only at the version it was read, and every message id is recorded in the
inbox only if no one recorded it meanwhile; a shortfall raises serialization_failure, nothing
of the batch is kept, and the store decides the batch again (`ConcurrencyConflict`).

The read is a PL/pgSQL function too, only so that its plan is kept (GENERIC_PLANS). Both
live in the connection's temporary schema, created on first use per connection from the
statements here: the code that plans and the SQL that reads and writes always come from the
same release (no migration, nothing to keep in step during a rolling deploy), and
tests/integration/test_plans.py EXPLAINs each of their statements. They need
session-level connections (not a transaction-pooling proxy) and the TEMPORARY privilege that
PostgreSQL gives every role by default.

The hot path uses asyncpg directly: SQLAlchemy Core costs 2-3x per step here (measured: ~1.5-1.8
ms of Python per step against ~0.4 ms). Connections come from SQLAlchemy's pool, so the process
keeps one pool; asyncpg's jsonb codec there takes JSON text and returns Python values.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from orchestrator.dispatch_marks import Mark
from orchestrator.engine import Incoming, RuntimeState, SagaSnapshot
from orchestrator.store.json_text import json_text
from orchestrator.store.plan import Plan

NOTIFY_CHANNEL = "sagaline_outbox"


SagaTexts = dict[uuid.UUID, tuple[str, str]]
"""Each saga a write inserted or updated: its data and runtime as the JSON text written."""


class ConcurrencyConflict(Exception):
    """Another transaction changed a saga (or recorded a message) between our read and write."""


class LostDeadlock(ConcurrencyConflict):
    """Two batches took the same sagas' locks in opposite orders and this one was rolled back:
    a race with another writer, whatever this batch had read or guessed."""


# Statements that find rows by an array of keys probe the key's index once per element: a
# LATERAL subquery that cannot be flattened (OFFSET 0, or FOR UPDATE) is always a nested loop
# over the array. `= ANY($1)` or a join with unnest leaves the access path to the planner, which
# on tables never analyzed (autovacuum off, a bulk load, a fresh deploy) estimates 64 index
# probes dearer than one sequential scan, and keeps that choice in the generic plan of a
# prepared statement long after the table grew. The keys arm keeps the cross product of
# workflows and keys (a saga matching both is returned once: its id is not in $1). The last arm
# returns the message ids already in the inbox (`seen`; the saga columns are NULL there).
_LOAD = """
SELECT false AS seen, i.* FROM unnest($1::uuid[]) AS k(id)
CROSS JOIN LATERAL (
    SELECT id, workflow, business_key, state, data, runtime, version, updated_at, finished_at,
        definition_version
    FROM saga.instances WHERE id = k.id OFFSET 0) AS i
UNION ALL
SELECT false, i.* FROM unnest($3::text[]) AS w(workflow)
CROSS JOIN unnest($2::text[]) AS k(business_key)
CROSS JOIN LATERAL (
    SELECT id, workflow, business_key, state, data, runtime, version, updated_at, finished_at,
        definition_version
    FROM saga.instances
    WHERE workflow = w.workflow AND business_key = k.business_key AND NOT id = ANY($1::uuid[])
    OFFSET 0) AS i
UNION ALL
SELECT true, m.message_id, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::jsonb,
    NULL::int, NULL::timestamptz, NULL::timestamptz, NULL::int
FROM unnest($4::uuid[]) AS k(message_id)
CROSS JOIN LATERAL (
    SELECT message_id FROM saga.inbox WHERE message_id = k.message_id OFFSET 0) AS m
"""

# The statements of the write function, each on the whole batch. Where a statement must touch
# every row it is given (the write's `all_rows`), a shortfall is a conflict: a message recorded
# or a saga started or moved by another transaction since the read.
_INBOX = """
INSERT INTO saga.inbox (message_id, saga_id, message_type, received_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
ON CONFLICT DO NOTHING
"""

_INSERT = """
INSERT INTO saga.instances
    (id, workflow, business_key, state, data, runtime, version, created_at, updated_at,
     finished_at, definition_version)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[],
                     $7::int[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
                     $11::int[])
ON CONFLICT DO NOTHING
"""

# One row per saga the batch touched, at the version it was read: sagas whose steps changed
# nothing still take part, so a decision made from a stale read is detected and redone.
# Row by row (`per_row`): an UPDATE ... FROM unnest(...) join is the planner's to choose, and
# the generic plan a connection makes while the table is still small (a fresh deploy) is a
# hash join over a sequential scan, kept for the connection's life while the table grows
# (measured: 2.7 ms per batch at 4,000 sagas, most of PostgreSQL's time per step). One row by
# its primary key is an index probe whatever the planner knows.
_UPDATE = """
UPDATE saga.instances
SET state = $3, data = $4, runtime = $5, version = $6, updated_at = $7, finished_at = $8
WHERE id = $1 AND version = $2
"""

_HOLD = """
UPDATE saga.instances SET version = version WHERE id = $1 AND version = $2
"""

_HISTORY = """
INSERT INTO saga.history
    (saga_id, version, at, message_id, message_type, outcome, from_state, to_state, commands,
     actor, note)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::uuid[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::text[])
"""

# $9: the dispatch lease (NULL: none), counted on the database's clock like the relay's check,
# never on the injected one, which tests set to any time they like.
_OUTBOX = """
INSERT INTO saga.outbox
    (message_id, saga_id, exchange, routing_key, message_type, body, headers, created_at,
     dispatch_until)
SELECT *, now() + $9 FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                 $6::bytea[], $7::jsonb[], $8::timestamptz[])
"""

# By key, row by row, for the same reason as _UPDATE: `ctid = ANY(...)` or a join leaves the
# access path to a generic plan that may have been made on an empty table (a sequential scan).
_TIMERS_FINISHED = """
DELETE FROM saga.timers WHERE saga_id = $1
"""

_TIMERS_SET = """
INSERT INTO saga.timers (saga_id, name, message_id, due_at, created_at)
SELECT s, n, m, d, $5 FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[])
     AS t(s, n, m, d)
ON CONFLICT (saga_id, name) DO UPDATE
SET message_id = excluded.message_id, due_at = excluded.due_at
"""

_TIMERS_CANCEL = """
DELETE FROM saga.timers WHERE saga_id = $1 AND name = $2
"""

# The timer loop's claim: the due timers, earliest first, locked (an ordered probe of
# ix_timers_due), then each deleted by its key (DELETE_TIMER). One DELETE by
# `ctid = ANY(ARRAY(...))` kept, in the generic plan it settled on while the table was empty,
# a sequential scan of every timer.
CLAIM_DUE_TIMERS = """
SELECT saga_id, name, message_id, due_at FROM saga.timers WHERE due_at <= $1
ORDER BY due_at, saga_id LIMIT $2 FOR UPDATE SKIP LOCKED
"""

DELETE_TIMER = """
DELETE FROM saga.timers WHERE saga_id = $1 AND name = $2
"""

# Earlier batches' dispatched rows, confirmed since (orchestrator.dispatch_marks): marked sent
# here instead of by a statement of their own. By message id alone and row by row, as the
# relay's MARK_DISPATCHED: a row the loop published meanwhile keeps its first time.
_MARK_DISPATCHED = """
UPDATE saga.outbox SET published_at = coalesce(published_at, $2) WHERE message_id = $1
"""


@dataclass(frozen=True)
class _Write:
    statement: str
    types: tuple[str, ...]
    """Of its parameters, in $n order: they become the function's arguments."""
    all_rows: bool = False
    """Fewer rows than given means a conflict."""
    per_row: bool = False
    """A statement on one row, run once per element of its array arguments."""


# In the order the batch writes them, the order in which they take their locks. Every applied
# message also moves or holds its saga, so the sagas' check alone would catch a message applied
# meanwhile; the inbox's own check keeps "each message id once" true without relying on that.
_WRITES = (
    _Write(_INBOX, ("uuid[]", "uuid[]", "text[]", "timestamptz[]"), all_rows=True),
    _Write(_INSERT, ("uuid[]", "text[]", "text[]", "text[]", "jsonb[]", "jsonb[]", "int[]",
                     "timestamptz[]", "timestamptz[]", "timestamptz[]", "int[]"), all_rows=True),
    _Write(_UPDATE, ("uuid[]", "int[]", "text[]", "jsonb[]", "jsonb[]", "int[]",
                     "timestamptz[]", "timestamptz[]"), all_rows=True, per_row=True),
    _Write(_HOLD, ("uuid[]", "int[]"), all_rows=True, per_row=True),
    _Write(_HISTORY, ("uuid[]", "int[]", "timestamptz[]", "uuid[]", "text[]", "text[]",
                      "text[]", "text[]", "jsonb[]", "text[]", "text[]")),
    _Write(_OUTBOX, ("uuid[]", "uuid[]", "text[]", "text[]", "text[]", "bytea[]", "jsonb[]",
                     "timestamptz[]", "interval")),
    _Write(_TIMERS_FINISHED, ("uuid[]",), per_row=True),
    _Write(_TIMERS_SET, ("uuid[]", "text[]", "uuid[]", "timestamptz[]", "timestamptz")),
    _Write(_TIMERS_CANCEL, ("uuid[]", "text[]"), per_row=True),
    _Write(_MARK_DISPATCHED, ("uuid[]", "timestamptz[]"), per_row=True),
)  # fmt: skip


GENERIC_PLANS = "SET plan_cache_mode TO force_generic_plan"
"""The functions' statements keep one plan per connection. Each one's plan is fixed by its
shape (index probes per unnested key, test_plans checks the generic plans too), but left to
choose, PostgreSQL plans the read afresh on every call (0.4 ms here, three times its run): the
generic plan's estimates (100 rows per array of unknown length, and the workflows x keys arm
their product) look dearer than any custom plan for a batch's few keys."""


def _function_sql(stem: str, arguments: Sequence[str], returns: str, body: str) -> tuple[str, str]:
    """(its name, its CREATE statement). The name is a hash of the definition: a connection
    that somehow kept an older definition never runs it for a newer release."""
    definition = (
        f"({', '.join(arguments)}) RETURNS {returns} LANGUAGE plpgsql {GENERIC_PLANS}"
        f" AS $body${body}$body$"
    )
    digest = hashlib.sha256(definition.encode()).hexdigest()[:12]
    name = f"pg_temp.{stem}_{digest}"
    return name, f"CREATE OR REPLACE FUNCTION {name}{definition}"


def _call(name: str, arguments: int, *, rows: bool = False) -> str:
    placeholders = ", ".join(f"${n}" for n in range(1, arguments + 1))
    return f"SELECT * FROM {name}({placeholders})" if rows else f"SELECT {name}({placeholders})"


_READ_TYPES = ("uuid[]", "text[]", "text[]", "uuid[]")
# The output columns share the names of the table's: the query's own references win.
_READ_FUNCTION, _CREATE_READ_FUNCTION = _function_sql(
    "sagaline_read",
    _READ_TYPES,
    "TABLE(seen boolean, id uuid, workflow varchar, business_key varchar, state varchar,"
    " data jsonb, runtime jsonb, version integer, updated_at timestamptz,"
    " finished_at timestamptz, definition_version integer)",
    f"""
#variable_conflict use_column
BEGIN
    RETURN QUERY {_LOAD.strip()};
END
""",
)
_READ_CALL = _call(_READ_FUNCTION, len(_READ_TYPES), rows=True)


def _shortfall_check(expected: str) -> str:
    """After a statement that must change `expected` rows: fewer is a concurrent step's doing."""
    return f"""
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed <> {expected} THEN
            RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
                MESSAGE = format('%s of %s rows changed under a concurrent step',
                                 {expected} - changed, {expected});
        END IF;"""


def _write_function_sql() -> tuple[str, str, int]:
    """(its name, its CREATE statement, its number of arguments)."""
    arguments: list[str] = []
    blocks: list[str] = []
    for write in _WRITES:
        offset = len(arguments)
        arguments += write.types
        given = f"cardinality(${offset + 1})"
        if write.per_row:
            statement = _shift_parameters(write.statement.strip(), offset, element="[n]")
            check = _shortfall_check("1") if write.all_rows else ""
            blocks.append(f"""
    FOR n IN 1 .. coalesce({given}, 0) LOOP
        {statement};{check}
    END LOOP;""")
        else:
            statement = _shift_parameters(write.statement.strip(), offset)
            check = _shortfall_check(given) if write.all_rows else ""
            blocks.append(f"""
    IF {given} > 0 THEN
        {statement};{check}
    END IF;""")
    arguments.append("boolean")  # wake the relay at commit
    body = f"""
DECLARE
    changed bigint;
BEGIN{"".join(blocks)}
    IF ${len(arguments)} THEN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    END IF;
END
"""
    return *_function_sql("sagaline_write", arguments, "void", body), len(arguments)


def _shift_parameters(statement: str, offset: int, element: str = "") -> str:
    """$1 becomes $(offset + 1): the statement's parameters as the function's arguments
    (`element` "[n]": the loop's element of each array argument)."""
    return re.sub(r"\$(\d+)", lambda found: f"${int(found[1]) + offset}{element}", statement)


_WRITE_FUNCTION, _CREATE_WRITE_FUNCTION, _WRITE_ARGUMENTS = _write_function_sql()
_WRITE_CALL = _call(_WRITE_FUNCTION, _WRITE_ARGUMENTS)
_prepared: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


async def prepare(conn: asyncpg.Connection) -> None:
    """Create the read and write functions on this connection, once; call it outside a
    transaction (a rollback would drop them while this process thinks they exist)."""
    if conn not in _prepared:
        await conn.execute(f"{_CREATE_READ_FUNCTION}; {_CREATE_WRITE_FUNCTION}")
        _prepared.add(conn)


@dataclass(frozen=True)
class BatchRead:
    fresh: list[bool]
    """Per incoming: its message id was never recorded, and is not repeated earlier in the
    batch."""
    loaded: dict[uuid.UUID, SagaSnapshot]
    """The sagas of the fresh incomings, by id."""
    owners: dict[tuple[str, str], uuid.UUID]
    """The owners of the business keys that fresh starting events claim."""


async def read(
    conn: asyncpg.Connection,
    incomings: Sequence[Incoming],
    start_keys: Sequence[tuple[str, str] | None],
) -> BatchRead:
    """Which messages are new, and the sagas (by id, and by the business keys that starting
    events claim) they act on; `start_keys` per incoming."""
    keys = {key for key in start_keys if key is not None}
    rows = await conn.fetch(
        _READ_CALL,
        list({i.saga_id for i in incomings}),
        sorted({k for _, k in keys}),  # distinct: each key is one probe per workflow
        sorted({w for w, _ in keys}),
        list({i.message_id for i in incomings}),
    )
    seen = {row["id"] for row in rows if row["seen"]}
    snapshots = {row["id"]: _snapshot(row) for row in rows if not row["seen"]}
    fresh_ids = {i.message_id for i in incomings} - seen
    fresh = []
    for incoming in incomings:
        fresh.append(incoming.message_id in fresh_ids)
        fresh_ids.discard(incoming.message_id)  # a second copy in the same batch is a duplicate
    acting = {i.saga_id for i, new in zip(incomings, fresh, strict=True) if new}
    claimed = {key for key, new in zip(start_keys, fresh, strict=True) if new and key}
    owners = {
        (s.workflow, s.business_key): s.saga_id
        for s in snapshots.values()
        if (s.workflow, s.business_key) in claimed
    }
    # Only the fresh messages' sagas take part: each loaded saga is held at its version.
    loaded = {
        saga_id: s
        for saga_id, s in snapshots.items()
        if saga_id in acting or (s.workflow, s.business_key) in claimed
    }
    return BatchRead(fresh, loaded, owners)


def _snapshot(row: Mapping[str, Any]) -> SagaSnapshot:
    return SagaSnapshot(
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


async def write(
    conn: asyncpg.Connection,
    plan: Plan,
    *,
    notify_relay: bool = True,
    dispatch_lease: timedelta | None = None,
    marks: Sequence[Mark] = (),
) -> SagaTexts:
    """Apply the plan in one call; ConcurrencyConflict when any saga moved or any message was
    recorded since the read, or the call lost a deadlock to another batch. Outside a
    transaction the call commits; inside, the caller's does. Returns the texts it wrote for
    the sagas (the snapshot cache keeps them as they are, instead of encoding them again).

    `notify_relay` wakes the outbox relay at commit (unless the caller dispatches itself).
    `dispatch_lease`: the caller publishes the outbox rows itself; the relay loop leaves them
    alone for this long. `marks`: earlier dispatched rows to mark sent (message id, time)."""
    if not any(
        (plan.inbox, plan.slots, plan.history, plan.outbox, plan.timers, plan.finished, marks)
    ):
        return {}  # only duplicates, nothing to mark: nothing to write
    sets = [(s, n, v[0], v[1]) for (s, n), v in plan.timers.items() if v is not None]
    cancels = [(s, n) for (s, n), v in plan.timers.items() if v is None]
    wake = notify_relay and bool(plan.outbox)
    texts: SagaTexts = {}
    arguments = [
        *_columns([(*row, plan.now) for row in plan.inbox], 4),
        *_saga_columns(plan, texts),
        *_columns(plan.history, 11),
        *_outbox_columns(plan),
        dispatch_lease,
        list(plan.finished),
        *_columns(sets, 4),
        plan.now,
        *_columns(cancels, 2),
        *_columns(marks, 2),
        wake,
    ]
    try:
        await conn.execute(_WRITE_CALL, *arguments)
    except asyncpg.DeadlockDetectedError as exc:
        raise LostDeadlock(str(exc)) from None
    except asyncpg.TransactionRollbackError as exc:
        # A shortfall (serialization_failure): nothing was kept, decide again.
        raise ConcurrencyConflict(str(exc)) from None
    return texts


def _outbox_columns(plan: Plan) -> list[list[Any]]:
    columns = _columns(plan.outbox, 8)
    columns[6] = [json_text(headers) for headers in columns[6]]  # jsonb goes as its text
    return columns


def _saga_columns(plan: Plan, texts: SagaTexts) -> list[list[Any]]:
    """The arguments of the insert, the update and the hold, in that order; `texts` gets each
    inserted or updated saga's data and runtime text."""
    new_rows: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    holds: list[tuple[uuid.UUID, int]] = []
    for saga_id, slot in plan.slots.items():
        current, loaded = slot.current, slot.loaded
        if current is None:
            continue
        if loaded is not None and current is loaded:  # only ignored steps: change nothing
            holds.append((saga_id, loaded.version))
            continue
        data, runtime = json_text(current.data), json_text(current.runtime.to_json())
        texts[saga_id] = data, runtime
        values = (current.state, data, runtime, current.version)
        finished_at = plan.now if current.finished else None
        if loaded is None:
            identity = (saga_id, current.workflow, current.business_key)
            new_rows.append(
                (*identity, *values, plan.now, plan.now, finished_at, current.definition_version)
            )
        else:
            updates.append((saga_id, loaded.version, *values, current.updated_at, finished_at))
    return [*_columns(new_rows, 11), *_columns(updates, 8), *_columns(holds, 2)]


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]
