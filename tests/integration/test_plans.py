"""Every hot-path statement uses its index on tables the planner has no statistics for.

A fresh migrated database, never analyzed (this machine runs PostgreSQL with autovacuum off;
production meets the same after a bulk load or a fresh deploy), gets ROWS rows in each hot
table by bulk INSERT ... SELECT, then `EXPLAIN (FORMAT JSON)` of each statement the orchestrator
and the workers run per batch must show no sequential scan (but on CONFIGURATION tables, which
stay as seeded: a few rows, read whole by design). Each statement is planned twice: as a custom
plan with realistic parameters (arrays of BATCH keys), and as the generic plan a prepared
statement settles on after a few executions (and keeps until the table is analyzed).
A second test makes the generic plans while the tables are still empty, as a fresh deploy's
connections do, and checks them again once the tables have grown: a connection keeps its plan.

The statements come from the code itself: the orchestrator's and the relay's SQL constants (a
new constant without parameters here fails the test), and every statement the workers execute
while they handle a batch through `WorkerProcess.handle_batch`, captured as sent: all seven of
them (order: payments, inventory, shipping; enrollment: courses, notifications; document
approval: documents, approvals), each sent every command it binds (a worker or a command left
out here fails the test).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Table, event
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers import WORKERS
from consumers.approvals.spec import SPEC as APPROVALS
from consumers.courses.spec import SPEC as COURSES
from consumers.documents.spec import SPEC as DOCUMENTS
from consumers.inventory.spec import SPEC as INVENTORY
from consumers.notifications.spec import SPEC as NOTIFICATIONS
from consumers.payments.spec import SPEC as PAYMENTS
from consumers.runtime import WorkerSpec
from consumers.shipping.spec import SPEC as SHIPPING
from consumers.testing import offline_worker
from contracts import documents as d
from contracts import enrollment as e
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
WORKER_SCHEMAS = tuple(spec.schema for spec in WORKERS.values())
SCHEMAS = ("saga", *WORKER_SCHEMAS)

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
        for schema in WORKER_SCHEMAS
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
    # Enrollment: course-g holds user-g's confirmed seat (seats_taken counts it) and access.
    """INSERT INTO courses.courses (course_id, title, capacity, seats_taken)
    SELECT 'course-' || g, 'Course ' || g, 1000000, 1 FROM generate_series(1, $1::int) g""",
    *(
        f"""INSERT INTO courses.{table} (course_id, user_id, saga_id, status)
        SELECT 'course-' || g, 'user-' || g, md5('saga' || g)::uuid, '{status}'
        FROM generate_series(1, $1::int) g"""
        for table, status in (("seats", "confirmed"), ("access_grants", "granted"))
    ),
    """INSERT INTO notifications.emails (email_id, saga_id, template, recipient, subject, body,
        course_id, user_id)
    SELECT 'em_' || md5('saga' || g), md5('saga' || g)::uuid, 'welcome',
        'user-' || g || '@example.com', 'Welcome to Course ' || g, repeat('x', 200),
        'course-' || g, 'user-' || g
    FROM generate_series(1, $1::int) g""",
    # Document approval. documents: change-g of doc-g drafted, finalised, filed and indexed
    # (version 1 of each). approvals, a worker of its own whose rows need not match those:
    # change-g's first role is open and escalated; the decisions are of an earlier change.
    """INSERT INTO documents.drafts (document_id, change_id, draft_version, saga_id, title,
        metadata, quality_score, tier, status)
    SELECT 'doc-' || g, 'change-' || g, 1, md5('saga' || g)::uuid, 'Document ' || g,
        '{"object_type": "table"}', 0.9, 2, 'generated'
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO documents.finals (document_id, change_id, final_version, draft_version, status)
    SELECT 'doc-' || g, 'change-' || g, 1, 1, 'generated' FROM generate_series(1, $1::int) g""",
    """INSERT INTO documents.library (document_id, change_id, final_version, location, title,
        status)
    SELECT 'doc-' || g, 'change-' || g, 1, 'library/doc-' || g || '/v1', 'Document ' || g, 'filed'
    FROM generate_series(1, $1::int) g""",
    *(
        f"""INSERT INTO documents.{table} (document_id, version, change_id, final_version,
            location, title)
        SELECT 'doc-' || g, 1, 'change-' || g, 1, 'library/doc-' || g || '/v1', 'Document ' || g
        FROM generate_series(1, $1::int) g"""
        for table in ("master_index", "master_index_versions")
    ),
    """INSERT INTO documents.voided (document_id, change_id, step)
    SELECT 'doc-' || g, 'change-void-' || g, (ARRAY['draft', 'final', 'filing', 'index'])[1 + g % 4]
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO approvals.requests (document_id, change_id, role, saga_id, tier, respond_by,
        status)
    SELECT 'doc-' || g, 'change-' || g, 'data_steward', md5('saga' || g)::uuid, 2,
        now() + interval '48 hours', 'open'
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO approvals.escalations (document_id, change_id, saga_id, tier, pending_roles,
        decide_by)
    SELECT 'doc-' || g, 'change-' || g, md5('saga' || g)::uuid, 2, ARRAY['data_steward', 'dba'],
        now() + interval '72 hours'
    FROM generate_series(1, $1::int) g""",
    """INSERT INTO approvals.decisions (document_id, change_id, saga_id, route, signoffs)
    SELECT 'doc-' || g, 'change-old-' || g, md5('saga-old' || g)::uuid, 'full',
        '[{"role": "data_steward", "approver": "ada"}]'
    FROM generate_series(1, $1::int) g""",
)

CONFIGURATION = {"documents.approval_tiers"}
"""Worker tables of configuration, not of rows that grow with traffic: LOAD leaves them as the
migrations seeded them, and a statement may read them whole. The approval tiers hold at most 99
rows (CHECK tier BETWEEN 1 AND 99, edited by operators with SQL); each new draft's tier follows
from all of them, so the documents worker reads them whole per draft (store.load_tiers)."""


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
        "_OUTBOX": [new, sagas, text, text, text, [b"x"] * BATCH, jsons, times,
                    timedelta(seconds=5)],
        "_TIMERS_SET": [sagas, ["step-timeout"] * BATCH, new, times, now],
        "_TIMERS_CANCEL": [sagas[0], "step-timeout"],
        "_TIMERS_FINISHED": [sagas[0]],
        "_MARK_DISPATCHED": [md5_uuid("out1"), now],
        "CLAIM_DUE_TIMERS": [now + timedelta(seconds=ROWS // 10), 1000],
        "DELETE_TIMER": [sagas[0], "step-timeout"],
        "CLAIM_NEXT": [200, [], False, [md5_uuid(f"out{g}") for g in spread()]],
        "MARK_SENT": [spread(200), now],
        "MARK_DISPATCHED": [[md5_uuid(f"out{g}") for g in spread()], now],
        "RELEASE_LEASES": [[md5_uuid(f"out{g}") for g in spread()]],
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


def command(payload: Command, saga_id: uuid.UUID | None = None) -> Envelope[Any]:
    return new_envelope(payload, correlation_id=saga_id or uuid.uuid4())


def new_key(prefix: str) -> str:
    """A key no loaded row has."""
    return f"{prefix}-new-{uuid.uuid4().hex[:8]}"


Batch = tuple[WorkerSpec, list[Envelope[Any]]]


def worker_batches() -> list[Batch]:
    """Per worker one batch with every command it binds: its forward commands, BATCH of each
    step, half for new keys and half for loaded ones, then its compensations (for the order
    workers, the single-command path), undoing what a step made and, where an undo that
    overtakes its step leaves a marker, one for a key no step reached."""
    return [
        *order_batches(),
        courses_batch(),
        notifications_batch(),
        documents_batch(),
        approvals_batch(),
    ]


def order_batches() -> list[Batch]:
    orders = [new_key("order") for _ in range(BATCH // 2)]
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


def courses_batch() -> Batch:
    """New users of loaded courses check, take a seat and get access; the loaded users (seat
    and access already theirs) have both reported. Then one of them gives both back, and a
    user who never enrolled has them fenced."""
    enrollments = [(f"course-{g}", new_key("user")) for g in spread(BATCH // 2)]
    enrollments += [(f"course-{g}", f"user-{g}") for g in spread(BATCH // 2)]
    never_enrolled = (f"course-{spread()[1]}", new_key("user"))
    forward = [
        command(step(course_id=course, user_id=user))
        for step in (e.CheckCourseCapacity, e.ConfirmEnrollment, e.GrantCourseAccess)
        for course, user in enrollments
    ]
    undo = [
        command(step(course_id=course, user_id=user))
        for course, user in (enrollments[-1], never_enrolled)
        for step in (e.RevokeCourseAccess, e.ReleaseSeat)
    ]
    return COURSES, forward + undo


def notifications_batch() -> Batch:
    """Welcome e-mails of new sagas, and of loaded ones (recorded already: reported), then a
    cancellation notice."""
    sagas = [(uuid.uuid4(), g) for g in spread(BATCH // 2)]
    sagas += [(md5_uuid(f"saga{g}"), g) for g in spread(BATCH // 2)]
    welcome = [
        command(
            e.SendWelcomeEmail(
                course_id=f"course-{g}",
                user_id=f"user-{g}",
                email=f"user-{g}@example.com",
                course_title=f"Course {g}",
            ),
            saga,
        )
        for saga, g in sagas
    ]
    saga, g = sagas[-1]
    notice = e.SendEnrollmentNotice(
        course_id=f"course-{g}",
        user_id=f"user-{g}",
        email=f"user-{g}@example.com",
        course_title=f"Course {g}",
    )
    return NOTIFICATIONS, [*welcome, command(notice, saga)]


def documents_batch() -> Batch:
    """Every step of new documents' first change and of loaded documents' next change (version
    2 of each: the loaded change holds version 1, and the index entry moves from it). Then both
    kinds are compensated in the saga's order (the index entry removed, or pointed back at
    version 1), and an undo overtakes a step that never ran (a void marker)."""
    changes = [(new_key("doc"), "change-1", 1) for _ in range(BATCH // 2)]
    changes += [(f"doc-{g}", new_key("change"), 2) for g in spread(BATCH // 2)]
    table = d.DocumentMetadata(object_type="table")
    forward = [
        *(
            command(
                d.GenerateDraft(
                    document_id=doc,
                    change_id=change,
                    title=f"Document {doc}",
                    metadata=table,
                    quality_score=0.9,
                )
            )
            for doc, change, _ in changes
        ),
        *(
            command(d.GenerateFinal(document_id=doc, change_id=change, draft_version=version))
            for doc, change, version in changes
        ),
        *(
            command(d.FileDocument(document_id=doc, change_id=change, final_version=version))
            for doc, change, version in changes
        ),
        *(
            command(
                d.UpdateMasterIndex(
                    document_id=doc,
                    change_id=change,
                    final_version=version,
                    location=f"library/{doc}/v{version}",
                )
            )
            for doc, change, version in changes
        ),
    ]
    undo = [
        command(step(document_id=doc, change_id=change))
        for doc, change, _ in (changes[0], changes[-1])
        for step in (
            d.RestorePreviousVersion,
            d.DeleteFiledDocument,
            d.DeleteFinal,
            d.DeleteDraft,
        )
    ]
    undo.append(command(d.DeleteDraft(document_id="doc-1", change_id=new_key("change"))))
    return DOCUMENTS, forward + undo


def approvals_batch() -> Batch:
    """Approvers reserved for new changes (the first role) and for loaded ones (the next role:
    the first is open), escalations (loaded: recorded already), decisions that close the open
    requests; then a request released, and one released before it was ever reserved."""
    changes = [(new_key("doc"), "change-1", "data_steward") for _ in range(BATCH // 2)]
    changes += [(f"doc-{g}", f"change-{g}", "dba") for g in spread(BATCH // 2)]
    now = datetime.now(UTC)
    signoffs = (d.Signoff(role="data_steward", approver="ada"),)
    forward = [
        *(
            command(
                d.ReserveApprover(
                    document_id=doc,
                    change_id=change,
                    role=role,
                    tier=2,
                    respond_by=now + timedelta(hours=48),
                )
            )
            for doc, change, role in changes
        ),
        *(
            command(
                d.EscalateApproval(
                    document_id=doc,
                    change_id=change,
                    tier=2,
                    pending_roles=(role,),
                    decide_by=now + timedelta(hours=72),
                )
            )
            for doc, change, role in changes
        ),
        *(
            command(
                d.RecordApprovalDecision(
                    document_id=doc, change_id=change, route="full", signoffs=signoffs
                )
            )
            for doc, change, _ in changes
        ),
    ]
    undo = [
        command(d.ReleaseApprover(document_id=doc, change_id=change, role=role))
        for doc, change, role in (changes[-1], ("doc-1", new_key("change"), "dba"))
    ]
    return APPROVALS, forward + undo


REFUSALS = ("Failed", "Denied")
"""How a refusal reply's type ends: a refused command skips the writes the test must see."""


async def worker_statements(engine: AsyncEngine) -> list[Statement]:
    """The statements the workers send while they handle their batches (and a redelivery of
    one command of each, which reads the stored reply), as sent."""
    captured: list[Statement] = []
    worker = ""

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        values = parameters[0] if many else parameters
        captured.append((f"{worker}: {' '.join(statement.split())[:90]}", statement, values))

    batches = worker_batches()
    assert [spec.name for spec, _ in batches] == list(WORKERS), "give every worker a batch here"
    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        for spec, commands in batches:
            assert {type(c.payload) for c in commands} == set(spec.commands), spec.name
            worker = spec.name
            process = offline_worker(spec, engine)
            replies = await process.handle_batch([(c, 1) for c in commands])
            refused = [r.header.type for r, _ in replies if r.header.type.endswith(REFUSALS)]
            assert not refused, f"{spec.name} refused commands of its batch: {refused}"
            await process.handle_batch([(commands[0], 2)])  # a duplicate: the stored reply
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    unique: dict[str, Statement] = {}
    for name, statement, values in captured:
        unique.setdefault(statement, (name, statement, values))
    statements = list(unique.values())
    for spec, _ in batches:
        sent = " ".join(s for name, s, _ in statements if name.startswith(f"{spec.name}: "))
        unseen = [t.fullname for t in spec.metadata.sorted_tables if not mentions(sent, t)]
        assert not unseen, f"no statement of {spec.name} the capture saw names {unseen}"
    return statements


def mentions(sql: str, table: Table) -> bool:
    """Whether the SQL names the table (documents.master_index is not master_index_versions)."""
    return re.search(rf"\b{re.escape(table.fullname)}\b", sql) is not None


def nulls(values: Sequence[Any]) -> str:
    """EXECUTE's arguments: all NULL (a generic plan does not depend on them), or none for a
    statement without parameters (the approval tiers' read)."""
    return f"({', '.join('NULL' for _ in values)})" if values else ""


def relation(node: dict[str, Any]) -> str | None:
    """The table a scan node reads (VERBOSE plans name its schema), None for other nodes."""
    if "Relation Name" not in node:
        return None
    return f"{node['Schema']}.{node['Relation Name']}"


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
        result = await conn.fetchval(f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE hot{nulls(values)}")
    else:
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        result = await conn.fetchval(f"EXPLAIN (FORMAT JSON, VERBOSE) {statement}", *values)
    return plan_of(result)


def plan_of(explained: Any) -> dict[str, Any]:
    """The top plan node of EXPLAIN (FORMAT JSON) output, as text or already decoded."""
    document = json.loads(explained) if isinstance(explained, str) else explained
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


@pytest.fixture(scope="module")
async def loaded(settings: Settings) -> AsyncIterator[tuple[Settings, list[Statement]]]:
    """A database of its own with ROWS rows in each hot table, never analyzed, and the hot-path
    statements: the workers' captured there (on loaded tables, so that every path runs, e.g. a
    reservation that finds its stock). Made once: loading takes most of this module's time."""
    unloaded = [
        table.fullname
        for spec in WORKERS.values()
        for table in spec.metadata.sorted_tables
        if not mentions(" ".join(LOAD), table) and table.fullname not in CONFIGURATION
    ]
    assert not unloaded, "give every worker table its LOAD statement"
    async with own_database(settings) as own:
        conn = await asyncpg.connect(own.database_url)
        try:
            await autovacuum_off(conn)
            for load in LOAD:
                await conn.execute(load, ROWS)
        finally:
            await conn.close()
        engine = create_unpooled_engine(own.sqlalchemy_url)
        try:
            statements = [*orchestrator_statements(), *await worker_statements(engine)]
        finally:
            await engine.dispose()
        yield own, statements


async def test_hot_path_statements_use_indexes_on_tables_never_analyzed(
    loaded: tuple[Settings, list[Statement]],
) -> None:
    own, statements = loaded
    # statement_cache_size=0: the generic plans are PREPAREd by name, which asyncpg's own
    # cache of unnamed statements must not collide with (DEALLOCATE ALL).
    conn = await asyncpg.connect(own.database_url, statement_cache_size=0)
    try:
        assert await never_analyzed(conn) == []
        failures = []
        for name, statement, values in statements:
            for generic in (False, True):
                plan = await explain(conn, statement, values, generic)
                failures += [
                    f"{name} ({'generic' if generic else 'custom'} plan): Seq Scan on"
                    f" {node['Schema']}.{node['Relation Name']}"
                    f" (estimated {node['Plan Rows']} rows)"
                    for node in plan_nodes(plan)
                    if node["Node Type"] == "Seq Scan" and relation(node) not in CONFIGURATION
                ]
        assert await never_analyzed(conn) == []
        assert not failures, "sequential scans on tables never analyzed:\n" + "\n".join(failures)
        # worker_statements checked that each worker's statements name all of its tables.
        assert len(statements) > 30
    finally:
        await conn.close()


PLANNED_PER_CALL = {"MARK_SENT", "MARK_DISPATCHED", "RELEASE_LEASES"}
"""Sent as simple queries with their values written in (relay.mark_sent_and_commit,
relay.mark_dispatched, relay.release_leases): planned afresh on every call, never from a plan
kept since the table was small."""

READS_ITS_QUEUE_WHOLE = {"CLAIM_NEXT": "ix_outbox_unpublished"}
"""The relay loop's claim reads the partial index of unpublished rows (its queue) in order by
design. Every other statement, the dispatch's mark and lease release included, must not: during
a broker outage that index holds the whole backlog."""


def whole_scans(plan: dict[str, Any], allowed_index: str | None = None) -> list[str]:
    """The plan's nodes that read a whole table, or a whole index with no condition on it
    (other than `allowed_index`), of tables other than CONFIGURATION."""
    found = []
    for node in plan_nodes(plan):
        if relation(node) in CONFIGURATION:
            continue
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
    settings: Settings, loaded: tuple[Settings, list[Statement]]
) -> None:
    """A fresh deploy's connections make their generic plans on empty tables and keep them
    while the tables grow (no ANALYZE invalidates them with autovacuum off): those plans must
    not read a whole table either. Found by the bench: the saga UPDATE ... FROM unnest join,
    planned on an empty table as a hash join over a sequential scan, cost 2.7 ms per batch at
    4,000 sagas and grew with every saga."""
    # The statements as captured on loaded tables (the fixture), planned here in a database of
    # its own: it must stay empty until its plans are made.
    _, statements = loaded
    async with own_database(settings) as own:
        conn = await asyncpg.connect(own.database_url, statement_cache_size=0)
        try:
            await autovacuum_off(conn)
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            kept = [
                (f"kept{n}", name, statement, nulls(values))
                for n, (name, statement, values) in enumerate(statements)
                if name not in PLANNED_PER_CALL
            ]
            for prepared, _, statement, arguments in kept:
                await conn.execute(f"PREPARE {prepared} AS {statement}")
                await conn.fetchval(f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE {prepared}{arguments}")
            for load in LOAD:
                await conn.execute(load, ROWS)
            assert await never_analyzed(conn) == []

            failures = []
            for prepared, name, _, arguments in kept:
                result = await conn.fetchval(
                    f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE {prepared}{arguments}"
                )
                failures += [
                    f"{name}: {scan}"
                    for scan in whole_scans(plan_of(result), READS_ITS_QUEUE_WHOLE.get(name))
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
