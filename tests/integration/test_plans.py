"""Every hot-path statement uses its index on tables the planner has no statistics for.

A fresh migrated database, never analyzed (this machine runs PostgreSQL with autovacuum off;
production meets the same after a bulk load or a fresh deploy), gets ROWS rows in each hot
table by bulk INSERT ... SELECT, then `EXPLAIN (FORMAT JSON)` of each statement the orchestrator
and the workers run per batch must show no sequential scan. Each statement is planned twice: as
a custom plan with realistic parameters (arrays of BATCH keys), and as the generic plan a
prepared statement settles on after a few executions (and keeps until the table is analyzed).
A second test makes the generic plans while the tables are still empty, as a fresh deploy's
connections do, and checks them again once the tables have grown: a connection keeps its plan.

The statements come from the code itself: the orchestrator's and the relay's SQL constants (a
new constant without parameters here fails the test), and every statement the order workers
execute while they handle a batch through `WorkerProcess.handle_batch`, captured as sent.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.inventory.spec import SPEC as INVENTORY
from consumers.payments.spec import SPEC as PAYMENTS
from consumers.runtime import WorkerSpec
from consumers.shipping.spec import SPEC as SHIPPING
from consumers.testing import offline_worker
from contracts import order as o
from contracts.base import Command
from contracts.envelope import Envelope, new_envelope
from orchestrator import relay
from orchestrator.store import sql
from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from tests.conftest import own_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROWS = 30_000
BATCH = 64
SCHEMAS = ("saga", "payments", "inventory", "shipping")

# One statement per table; :n is ROWS. Keys follow a pattern the tests can rebuild (md5 uuids).
LOAD = (
    """INSERT INTO saga.instances (id, workflow, business_key, state, data, runtime, version,
        created_at, updated_at, finished_at)
    SELECT md5('saga' || g)::uuid, 'order', 'order-' || g, 'awaiting_payment',
        '{"order_id": "order"}', '{"outstanding": []}', 3, now(), now(),
        CASE WHEN g % 2 = 0 THEN now() END
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO saga.inbox (message_id, saga_id, message_type, received_at)
    SELECT md5('in' || g)::uuid, md5('saga' || g)::uuid, 'PaymentProcessed', now()
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO saga.outbox (message_id, saga_id, exchange, routing_key, message_type, body,
        headers, created_at, published_at)
    SELECT md5('out' || g)::uuid, md5('saga' || g)::uuid, 'commands', 'payments',
        'ProcessPayment', convert_to(repeat('x', 300), 'UTF8'), '{}', now(),
        CASE WHEN g % 100 <> 0 THEN now() END
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO saga.timers (saga_id, name, message_id, due_at, created_at)
    SELECT md5('saga' || g)::uuid, 'step-timeout', md5('timer' || g)::uuid,
        now() + g * interval '1 second', now()
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO saga.history (saga_id, version, at, message_id, message_type, outcome,
        from_state, to_state, commands, actor, note)
    SELECT md5('saga' || g)::uuid, 1, now(), md5('in' || g)::uuid, 'PaymentProcessed',
        'advanced', 'a', 'b', '[]', 'event', ''
    FROM generate_series(1, $1::int) g""",
    *(
        f"""INSERT INTO {schema}.inbox (message_id, command_type, reply_type, reply_body)
        SELECT md5('{schema}' || g)::uuid, 'Command', 'Reply', convert_to(repeat('x', 400), 'UTF8')
        FROM generate_series(1, $1::int) g"""
        for schema in ("payments", "inventory", "shipping")
    ),
    """INSERT INTO payments.ledger (order_id, kind, amount_cents, payment_id, customer_id,
        currency, message_id)
    SELECT 'order-' || g, 'charge', 1000, 'pay-' || g, 'customer-' || g, 'EUR',
        md5('charge' || g)::uuid
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO payments.customer_limits (customer_id, limit_cents)
    SELECT 'customer-' || g, 500000 FROM generate_series(1, $1::int) g""",
    """INSERT INTO inventory.stock (sku, on_hand, reserved)
    SELECT 'sku-' || g, 1000000, 1 FROM generate_series(1, $1::int) g""",
    """INSERT INTO inventory.orders (order_id, saga_id, status)
    SELECT 'order-' || g, md5('saga' || g)::uuid, 'reserved' FROM generate_series(1, $1::int) g""",
    """INSERT INTO inventory.reservations (order_id, sku, quantity)
    SELECT 'order-' || g, 'sku-' || g, 1 FROM generate_series(1, $1::int) g""",
    """INSERT INTO shipping.shipments (order_id, saga_id, country, tracking_number, status)
    SELECT 'order-' || g, md5('saga' || g)::uuid, 'DE', 'TRK' || g, 'created'
    FROM generate_series(1, $1::int) g""",
)


def md5_uuid(text: str) -> uuid.UUID:
    """PostgreSQL's md5(text)::uuid."""
    return uuid.UUID(hashlib.md5(text.encode()).hexdigest())


Statement = tuple[str, str, Sequence[Any]]
"""(name, SQL with $n parameters, parameter values)."""


def spread(count: int = BATCH) -> list[int]:
    """Row numbers spread over the loaded rows, as a batch's keys would be."""
    return [1 + i * (ROWS // count) for i in range(count)]


def orchestrator_statements() -> list[Statement]:
    """Every SQL constant of orchestrator.store.sql and orchestrator.relay, with parameters."""
    now = datetime.now(UTC)
    sagas = [md5_uuid(f"saga{g}") for g in spread()]
    new = [uuid.uuid4() for _ in range(BATCH)]
    text, times, jsons, ints = ["x"] * BATCH, [now] * BATCH, ["{}"] * BATCH, [3] * BATCH
    params: dict[str, list[Any]] = {
        "_INBOX": [new, sagas, text, times],
        "_LOAD": [sagas, [f"order-{g}" for g in spread()], ["order"],
                  [md5_uuid(f"in{g}") for g in spread()]],
        "_INSERT": [new, text, [str(n) for n in new], text, jsons, jsons, ints, times, times,
                    [None] * BATCH, ints],
        # Row by row in the write function: one row's values.
        "_UPDATE": [sagas[0], 3, "x", "{}", "{}", 4, now, None],
        "_HOLD": [sagas[0], 3],
        "_HISTORY": [sagas, ints, times, new, text, text, text, text, ["[]"] * BATCH, text, text],
        "_OUTBOX": [new, sagas, text, text, text, [b"x"] * BATCH, jsons, times],
        "_TIMERS_SET": [sagas, ["step-timeout"] * BATCH, new, times, now],
        "_TIMERS_CANCEL": [sagas[0], "step-timeout"],
        "_TIMERS_FINISHED": [sagas[0]],
        "CLAIM_DUE_TIMERS": [now + timedelta(seconds=ROWS // 10), 1000],
        "DELETE_TIMER": [sagas[0], "step-timeout"],
        "CLAIM_NEXT": [200, []],
        "CLAIM_GIVEN": [[md5_uuid(f"out{g}") for g in spread()], []],
        "MARK_SENT": [spread(200), now],
    }  # fmt: skip
    found = {
        name: value
        for module in (sql, relay)
        for name, value in vars(module).items()
        if isinstance(value, str)
        and value.lstrip().split(" ", 1)[0] in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
        and name not in ("_READ_CALL", "_WRITE_CALL")  # the functions of the statements here
    }
    assert set(found) == set(params), "give every hot-path SQL constant its parameters here"
    return [(name, found[name], params[name]) for name in sorted(found)]


def command(payload: Command) -> Envelope[Any]:
    return new_envelope(payload, correlation_id=uuid.uuid4())


def worker_batches() -> list[tuple[WorkerSpec, list[Envelope[Any]]]]:
    """A full batch of forward commands for new and known orders, then a compensation (the
    single-command path), per order worker."""
    orders = [f"order-new-{uuid.uuid4().hex[:8]}" for _ in range(BATCH // 2)]
    orders += [f"order-{g}" for g in spread(BATCH // 2)]
    line = (o.OrderLine(sku="sku-7", quantity=1),)
    address = o.Address(country="DE", postcode="10115", city="Berlin")
    return [
        (
            PAYMENTS,
            [
                command(
                    o.ProcessPayment(
                        order_id=order,
                        customer_id=f"customer-{g}",
                        amount_cents=1_000,
                        currency="EUR",
                        card_token="tok_ok",
                    )
                )
                for order, g in zip(orders, spread(), strict=True)
            ]
            + [command(o.RefundPayment(order_id=orders[-1]))],
        ),
        (
            INVENTORY,
            [
                command(
                    o.ReserveInventory(
                        order_id=order, lines=(o.OrderLine(sku=f"sku-{g}", quantity=1),)
                    )
                )
                for order, g in zip(orders, spread(), strict=True)
            ]
            + [command(o.ReleaseInventory(order_id=orders[-1]))],
        ),
        (
            SHIPPING,
            [
                command(o.CreateShipment(order_id=order, ship_to=address, lines=line))
                for order in orders
            ]
            + [command(o.CancelShipment(order_id=orders[-1]))],
        ),
    ]


async def worker_statements(engine: AsyncEngine) -> list[Statement]:
    """The statements the order workers send while they handle a batch (and a redelivery of
    one of its commands, which reads the stored reply), as sent."""
    captured: list[Statement] = []
    worker = ""

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        values = parameters[0] if many else parameters
        captured.append((f"{worker}: {' '.join(statement.split())[:90]}", statement, values))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        for spec, commands in worker_batches():
            worker = spec.name
            process = offline_worker(spec, engine)
            await process.handle_batch([(c, 1) for c in commands])
            await process.handle_batch([(commands[0], 2)])  # a duplicate: the stored reply
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    unique: dict[str, Statement] = {}
    for name, statement, values in captured:
        unique.setdefault(statement, (name, statement, values))
    return list(unique.values())


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


async def explain(
    conn: asyncpg.Connection, statement: str, values: Sequence[Any], generic: bool
) -> dict[str, Any]:
    if generic:
        # The plan a prepared statement keeps; it does not depend on the values (all NULL).
        await conn.execute("DEALLOCATE ALL")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE hot AS {statement}")
        nulls = ", ".join("NULL" for _ in values)
        result = await conn.fetchval(f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE hot({nulls})")
    else:
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        result = await conn.fetchval(f"EXPLAIN (FORMAT JSON, VERBOSE) {statement}", *values)
    document = json.loads(result) if isinstance(result, str) else result
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


async def never_analyzed(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT schemaname || '.' || relname AS name FROM pg_stat_user_tables"
        " WHERE schemaname = ANY($1::text[])"
        " AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)",
        list(SCHEMAS),
    )
    return [row["name"] for row in rows]


async def autovacuum_off(conn: asyncpg.Connection) -> None:
    """Where autovacuum runs, it must not analyze the tables either."""
    tables = await conn.fetch(
        "SELECT format('%I.%I', schemaname, relname) AS name FROM pg_stat_user_tables"
        " WHERE schemaname = ANY($1::text[])",
        list(SCHEMAS),
    )
    for table in tables:
        await conn.execute(f"ALTER TABLE {table['name']} SET (autovacuum_enabled = off)")


async def test_hot_path_statements_use_indexes_on_tables_never_analyzed(
    settings: Settings,
) -> None:
    async with own_database(settings) as own:
        # statement_cache_size=0: the generic plans are PREPAREd by name, which asyncpg's own
        # cache of unnamed statements must not collide with (DEALLOCATE ALL).
        conn = await asyncpg.connect(own.database_url, statement_cache_size=0)
        engine = create_unpooled_engine(own.sqlalchemy_url)
        try:
            await autovacuum_off(conn)
            for load in LOAD:
                await conn.execute(load, ROWS)
            assert await never_analyzed(conn) == []
            statements = [*orchestrator_statements(), *await worker_statements(engine)]

            failures = []
            for name, statement, values in statements:
                for generic in (False, True):
                    plan = await explain(conn, statement, values, generic)
                    failures += [
                        f"{name} ({'generic' if generic else 'custom'} plan): Seq Scan on"
                        f" {node['Schema']}.{node['Relation Name']}"
                        f" (estimated {node['Plan Rows']} rows)"
                        for node in plan_nodes(plan)
                        if node["Node Type"] == "Seq Scan"
                    ]
            assert await never_analyzed(conn) == []
            assert not failures, "sequential scans on tables never analyzed:\n" + "\n".join(
                failures
            )
            assert len(statements) > 30  # the capture saw the workers' statements
        finally:
            await engine.dispose()
            await conn.close()


PLANNED_PER_CALL = {"MARK_SENT"}
"""Sent as a simple query with its values written in (relay.mark_sent_and_commit): planned
afresh on every call, never from a plan kept since the table was small."""

READS_ITS_QUEUE_WHOLE = {"CLAIM_NEXT": "ix_outbox_unpublished"}
"""The relay loop's claim reads the partial index of unpublished rows (its queue) in order by
design. Every other statement, the intake's dispatch claim included, must not: during a broker
outage that index holds the whole backlog."""


def whole_scans(plan: dict[str, Any], allowed_index: str | None = None) -> list[str]:
    """The plan's nodes that read a whole table, or a whole index with no condition on it
    (other than `allowed_index`)."""
    found = []
    for node in plan_nodes(plan):
        if node["Node Type"] == "Seq Scan":
            found.append(f"Seq Scan on {node['Schema']}.{node['Relation Name']}")
        elif (
            node["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
            and "Index Cond" not in node
            and node["Index Name"] != allowed_index
        ):
            found.append(f"{node['Node Type']} of all of {node['Index Name']}")
    return found


async def test_plans_made_while_the_tables_were_empty_still_probe_indexes_once_they_grew(
    settings: Settings,
) -> None:
    """A fresh deploy's connections make their generic plans on empty tables and keep them
    while the tables grow (no ANALYZE invalidates them with autovacuum off): those plans must
    not read a whole table either. Found by the bench: the saga UPDATE ... FROM unnest join,
    planned on an empty table as a hash join over a sequential scan, cost 2.7 ms per batch at
    4,000 sagas and grew with every saga."""
    async with own_database(settings) as capture, own_database(settings) as own:
        # The workers' statements, captured as the first test captures them (on loaded tables,
        # so that every path runs, e.g. a reservation that finds its stock) in a database of
        # their own: the empty one must stay empty until its plans are made.
        loading = await asyncpg.connect(capture.database_url)
        try:
            for load in LOAD:
                await loading.execute(load, ROWS)
        finally:
            await loading.close()
        engine = create_unpooled_engine(capture.sqlalchemy_url)
        try:
            statements = [*orchestrator_statements(), *await worker_statements(engine)]
        finally:
            await engine.dispose()
        conn = await asyncpg.connect(own.database_url, statement_cache_size=0)
        try:
            await autovacuum_off(conn)
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            kept = [
                (f"kept{n}", name, statement, ", ".join("NULL" for _ in values))
                for n, (name, statement, values) in enumerate(statements)
                if name not in PLANNED_PER_CALL
            ]
            for prepared, _, statement, nulls in kept:
                await conn.execute(f"PREPARE {prepared} AS {statement}")
                await conn.fetchval(f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE {prepared}({nulls})")
            for load in LOAD:
                await conn.execute(load, ROWS)
            assert await never_analyzed(conn) == []

            failures = []
            for prepared, name, _, nulls in kept:
                result = await conn.fetchval(
                    f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE {prepared}({nulls})"
                )
                document = json.loads(result) if isinstance(result, str) else result
                failures += [
                    f"{name}: {scan}"
                    for scan in whole_scans(document[0]["Plan"], READS_ITS_QUEUE_WHOLE.get(name))
                ]
            assert not failures, "plans made on empty tables read whole tables:\n" + "\n".join(
                failures
            )
        finally:
            await conn.close()


async def test_the_batch_functions_keep_generic_plans_and_the_read_returns_its_statements_rows(
    settings: Settings,
) -> None:
    """Left to choose, PostgreSQL plans the batch read afresh on every call (sql.GENERIC_PLANS);
    wrapped in a function that keeps one plan, it must still return exactly what it wraps."""
    async with own_database(settings) as own:
        conn = await asyncpg.connect(own.database_url)
        try:
            await sql.prepare(conn)
            functions = await conn.fetch(
                "SELECT proname, proconfig FROM pg_proc"
                " WHERE pronamespace = pg_my_temp_schema() ORDER BY proname"
            )
            assert [(f["proname"].rsplit("_", 1)[0], f["proconfig"]) for f in functions] == [
                ("sagaline_read", ["plan_cache_mode=force_generic_plan"]),
                ("sagaline_write", ["plan_cache_mode=force_generic_plan"]),
            ]
            for load in LOAD[:2]:  # sagas, and messages in the inbox
                await conn.execute(load, 40)
            # Each arm: sagas by id (one unknown), by business key, messages seen (one not).
            values = [
                [md5_uuid("saga1"), md5_uuid("saga2"), uuid.uuid4()],
                ["order-3", "order-4", "order-404"],
                ["order", "enrollment"],
                [md5_uuid("in5"), uuid.uuid4()],
            ]
            wrapped = await conn.fetch(sql._READ_CALL, *values)
            plain = await conn.fetch(sql._LOAD, *values)
            assert sorted(map(tuple, wrapped)) == sorted(map(tuple, plain))
            assert [tuple(r.keys()) for r in wrapped[:1]] == [tuple(plain[0].keys())]
            assert len(wrapped) == 5  # two by id, two by key, one seen message
        finally:
            await conn.close()
