"""Operator tools on real sagas: show, the stuck-saga query, retry, skip, compensate, abort.

The orchestrator and the order workers run in-process against the real broker and a database
of this module's own (the orchestrator's relay and timer loop work on every row of the database
they are given, so they must not see other tests' sagas). Actions go through the `sagaline`
command line, as an operator would run them.

The helpers here (Stack, cli, submit, …) are shared with test_dlq*.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from faststream.asgi import AsgiFastStream
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner, Result

from consumers import WorkerSettings, build_app
from consumers.inventory.handlers import seed_stock
from consumers.payments import tables as pay
from consumers.testing import running
from orchestrator.admin import SagaAdmin, SagaNotFound
from orchestrator.app import Orchestrator
from orchestrator.engine import EngineConfig, Incoming, OperatorRefused
from orchestrator.store.saga_store import SagaStore
from orchestrator.store.tables import history, instances
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_unpooled_engine
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings
from sagaline_tools.cli import app as cli_app
from tests.conftest import delete_namespace, own_database
from tests.integration.support import FakeClock, order_submitted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HEALTHY = WorkerSettings(fail_commands=frozenset())
ORDER_WORKERS = ("payments", "inventory", "shipping")
SKU = "ops-sku"
NO_STOCK = "ops-sku-none"


def failing(*command_types: str) -> WorkerSettings:
    return WorkerSettings(fail_commands=frozenset(command_types))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def ops_settings(settings: Settings) -> AsyncIterator[Settings]:
    """A database for this module alone; a long step timeout so no saga times out mid-test."""
    changes = {
        "step_timeout_seconds": 600.0,
        "db_pool_size": 3,
        "relay_poll_seconds": 0.2,
        "timer_poll_seconds": 0.2,
        # A parking scan holds messages for a moment; keep it out of the way of the tests.
        "parking_scan_seconds": 3600.0,
    }
    async with own_database(settings, **changes) as own:
        engine = create_unpooled_engine(own.sqlalchemy_url)
        async with engine.begin() as conn:
            await seed_stock(conn, {SKU: 10_000, NO_STOCK: 0})
        await engine.dispose()
        yield own


@pytest.fixture(scope="module")
async def db(ops_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(ops_settings.sqlalchemy_url)
    yield engine
    await engine.dispose()


class Stack:
    """The orchestrator and workers as in-process apps; a worker can be restarted with other
    settings (the fault switch on or off), as an operator's fix-and-redeploy would."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.orchestrator: Orchestrator | None = None
        self._running: dict[str, Any] = {}

    async def start(self, name: str, config: WorkerSettings = HEALTHY) -> None:
        app: AsgiFastStream
        if name == "orchestrator":
            self.orchestrator = Orchestrator(self.settings)
            app = self.orchestrator.build()
        else:
            app = build_app(name, self.settings, config)
        context = running(app)
        await context.__aenter__()
        self._running[name] = context

    async def stop(self, name: str) -> None:
        await self._running.pop(name).__aexit__(None, None, None)

    async def restart(self, name: str, config: WorkerSettings = HEALTHY) -> None:
        await self.stop(name)
        await self.start(name, config)

    async def close(self) -> None:
        for name in reversed(list(self._running)):
            await self.stop(name)


@pytest.fixture
async def stack(ops_settings: Settings, db: AsyncEngine) -> AsyncIterator[Stack]:
    """A fresh broker namespace per test, so parking counts start at zero, and empty saga
    tables: the relay and the timer loop would otherwise pick up earlier tests' rows (outbox
    rows addressed to another namespace's exchanges, timers due long ago)."""
    async with db.begin() as conn:
        await conn.execute(
            text("TRUNCATE saga.instances, saga.inbox, saga.outbox, saga.timers, saga.history")
        )
    own = ops_settings.model_copy(
        update={"namespace": f"{ops_settings.namespace}-{uuid.uuid4().hex[:6]}"}
    )
    value = Stack(own)
    try:
        yield value
    finally:
        await value.close()
        await delete_namespace(own)


# --- helpers ---------------------------------------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "AMQP_URL": settings.amqp_url,
        "DATABASE_URL": settings.database_url,
        "SAGALINE_NAMESPACE": settings.namespace,
        "SAGALINE_STEP_TIMEOUT_SECONDS": str(settings.step_timeout_seconds),
        "SAGALINE_RETRY_DELAYS": ",".join(str(d) for d in settings.retry_delays),
        "USER": "ops-tester",
    }


async def cli(settings: Settings, *args: str) -> Result:
    """Run `sagaline …` as an operator would (a thread: the CLI runs its own event loop)."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli_app, list(args), env=cli_env(settings))


async def cli_json(settings: Settings, *args: str) -> Any:
    result = await cli(settings, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


async def submit(settings: Settings, *, sku: str = SKU, amount_cents: int = 1_500) -> uuid.UUID:
    envelope = order_submitted(sku=sku, amount_cents=amount_cents)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await publish_envelope(channel, settings.topology.events_exchange, envelope)
    finally:
        await connection.close()
    return envelope.correlation_id


def order_id(saga_id: uuid.UUID) -> str:
    return f"order-{saga_id}"  # tests.integration.support.order_submitted's business key


async def saga_state(db: AsyncEngine, saga_id: uuid.UUID) -> str | None:
    async with db.connect() as conn:
        value = await conn.scalar(select(instances.c.state).where(instances.c.id == saga_id))
    return None if value is None else str(value)


async def wait_state(db: AsyncEngine, saga_id: uuid.UUID, state: str, within: float = 30.0) -> None:
    seen: str | None = None
    try:
        async with asyncio.timeout(within):
            while (seen := await saga_state(db, saga_id)) != state:
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"saga {saga_id} is {seen}, expected {state}") from None


async def history_of(db: AsyncEngine, saga_id: uuid.UUID) -> list[Any]:
    async with db.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(history).where(history.c.saga_id == saga_id).order_by(history.c.id)
                )
            ).all()
        )


async def charges(db: AsyncEngine, saga_id: uuid.UUID) -> int:
    async with db.connect() as conn:
        value = await conn.scalar(
            select(func.count()).where(
                pay.ledger.c.order_id == order_id(saga_id), pay.ledger.c.kind == "charge"
            )
        )
    return int(value or 0)


async def wait_parked(settings: Settings, consumer: str, count: int, within: float = 30.0) -> None:
    """Until the consumer's parking queue holds `count` messages (read without taking any)."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.topology.parking_queue(consumer), passive=True)
        async with asyncio.timeout(within):
            while True:
                declared = await queue.declare()
                if declared.message_count >= count:
                    return
                await asyncio.sleep(0.1)
    finally:
        await connection.close()


def assert_operator_entry(entries: list[Any], outcome: str, operator: str, reason: str) -> Any:
    (entry,) = [e for e in entries if e.actor == f"operator:{operator}"]
    assert entry.outcome == outcome
    assert reason in entry.note
    return entry


# --- reading ---------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    # Long before every other saga in the database: only this test's sagas can be "stuck".
    return FakeClock(datetime(2001, 1, 1, tzinfo=UTC))


@pytest.fixture
def admin(db: AsyncEngine, ops_settings: Settings, clock: FakeClock) -> SagaAdmin:
    config = EngineConfig(step_timeout=timedelta(minutes=2))
    return SagaAdmin(db, SagaStore(db, ops_settings.topology, config, WORKFLOWS, clock=clock))


async def test_stuck_query_finds_exactly_the_stuck_sagas(
    admin: SagaAdmin, db: AsyncEngine, clock: FakeClock
) -> None:
    store = admin.store
    old = [order_submitted() for _ in range(3)]
    for envelope in old:
        await store.handle(Incoming.from_envelope(envelope))
    # One old saga finished long ago: finished sagas are never stuck, however old.
    await admin.abort(str(old[2].correlation_id), "ops-anna", "test")
    clock.advance(timedelta(hours=2, minutes=30))
    recent = order_submitted()
    await store.handle(Incoming.from_envelope(recent))
    # And one moved back in time with SQL, as if nothing had happened to it for a day.
    backdated = order_submitted()
    await store.handle(Incoming.from_envelope(backdated))
    async with db.begin() as conn:
        await conn.execute(
            update(instances)
            .where(instances.c.id == backdated.correlation_id)
            .values(updated_at=clock.now - timedelta(days=1))
        )
    clock.advance(timedelta(minutes=30))  # now: 03:00; the old ones are idle for 3 hours

    stuck = await admin.list(stuck_for=timedelta(hours=2))

    # Longest idle first (ties in id order).
    assert [s.id for s in stuck] == [
        backdated.correlation_id,
        *sorted([old[0].correlation_id, old[1].correlation_id]),
    ]
    assert [s.idle_seconds for s in stuck] == [24.5 * 3600, 3 * 3600.0, 3 * 3600.0]
    assert all(s.state == "awaiting_payment" and s.finished_at is None for s in stuck)
    assert [s.id for s in await admin.list(stuck_for=timedelta(hours=4))] == [
        backdated.correlation_id
    ]
    assert len(await admin.list(stuck_for=timedelta(hours=2), limit=1)) == 1
    assert await admin.list(stuck_for=timedelta(hours=2), state="awaiting_shipment") == []
    assert len(await admin.list(stuck_for=timedelta(hours=2), workflow="order")) == 3
    listed = {s.id for s in await admin.list(limit=1000)}
    assert old[2].correlation_id in listed and recent.correlation_id in listed


async def test_show_by_id_or_business_key(admin: SagaAdmin) -> None:
    envelope = order_submitted()
    await admin.store.handle(Incoming.from_envelope(envelope))
    saga_id = envelope.correlation_id

    by_id = await admin.show(str(saga_id))
    by_key = await admin.show(envelope.payload.order_id)

    assert by_id == by_key
    assert (by_id.summary.workflow, by_id.summary.state, by_id.summary.version) == (
        "order",
        "awaiting_payment",
        1,
    )
    (command,) = by_id.outstanding
    assert command.type == "ProcessPayment"
    assert command.published_at is None  # no relay runs in this test
    assert [t.name for t in by_id.timers] == ["step-timeout"]
    (entry,) = by_id.history
    assert (entry.message_type, entry.outcome, entry.to_state, entry.actor) == (
        "OrderSubmitted",
        "started",
        "awaiting_payment",
        "message",
    )
    assert entry.commands[0]["message_id"] == str(command.message_id)
    assert by_id.data["order_id"] == envelope.payload.order_id
    with pytest.raises(SagaNotFound, match="no saga with id or business key 'nope'"):
        await admin.show("nope")
    with pytest.raises(SagaNotFound):
        await admin.show(str(uuid.uuid4()))


async def test_retry_refuses_when_nothing_is_awaited(admin: SagaAdmin) -> None:
    envelope = order_submitted()
    await admin.store.handle(Incoming.from_envelope(envelope))
    await admin.abort(envelope.payload.order_id, "ops-anna", "test")
    with pytest.raises(OperatorRefused, match="already aborted"):
        await admin.retry(envelope.payload.order_id, "ops-anna", "again")


# --- acting on running sagas -------------------------------------------------------------------


async def test_retry_resends_the_same_command_and_the_saga_completes_once(
    stack: Stack, db: AsyncEngine
) -> None:
    settings = stack.settings
    await stack.start("orchestrator")
    await stack.start("payments", failing("ProcessPayment"))
    await stack.start("inventory")
    await stack.start("shipping")
    saga_id = await submit(settings)
    await wait_parked(settings, "payments", 1)
    (before,) = (await cli_json(settings, "saga", "show", str(saga_id)))["outstanding"]

    await stack.restart("payments")  # the fix is deployed
    result = await cli(
        settings, "saga", "retry", order_id(saga_id), "--reason", "payments fixed", "--by", "al"
    )
    assert result.exit_code == 0, result.stderr
    assert f"re-sent ProcessPayment {before['message_id']}" in result.stdout
    await wait_state(db, saga_id, "completed")

    entries = await history_of(db, saga_id)
    retry = assert_operator_entry(entries, "operator-retry", "al", "payments fixed")
    assert retry.commands[0]["message_id"] == before["message_id"]  # the same command
    assert await charges(db, saga_id) == 1
    async with db.connect() as conn:
        handled = await conn.scalar(
            select(func.count()).where(pay.inbox.c.message_id == uuid.UUID(before["message_id"]))
        )
    assert handled == 1

    # The parked copy of that command is still there; replaying it changes nothing.
    replayed = await cli(settings, "dlq", "replay", "payments", "--all")
    assert replayed.exit_code == 0, replayed.stderr
    await asyncio.sleep(1.0)
    assert await charges(db, saga_id) == 1
    assert await saga_state(db, saga_id) == "completed"

    refused = await cli(settings, "saga", "retry", str(saga_id), "--reason", "again")
    assert refused.exit_code == 1
    assert refused.stderr.strip() == "error: saga is already completed"


async def test_skip_counts_a_stuck_compensation_as_confirmed(stack: Stack, db: AsyncEngine) -> None:
    settings = stack.settings
    await stack.start("orchestrator")
    await stack.start("payments", failing("RefundPayment"))
    await stack.start("inventory")
    saga_id = await submit(settings, sku=NO_STOCK)  # paid, then out of stock: refund
    await wait_state(db, saga_id, "compensating")
    await wait_parked(settings, "payments", 1)  # the refund cannot go through

    result = await cli(settings, "saga", "skip", str(saga_id), "--reason", "refunded by hand")
    assert result.exit_code == 0, result.stderr
    await wait_state(db, saga_id, "failed")
    entry = assert_operator_entry(
        await history_of(db, saga_id), "transitioned", "ops-tester", "refunded by hand"
    )
    assert (entry.from_state, entry.to_state) == ("compensating", "failed")
    assert "compensating → failed (skip by ops-tester)" in result.stdout


async def test_compensate_undoes_what_was_done(stack: Stack, db: AsyncEngine) -> None:
    settings = stack.settings
    await stack.start("orchestrator")
    await stack.start("payments")
    # No inventory worker: the saga waits in awaiting_inventory with ReserveInventory in flight.
    saga_id = await submit(settings)
    await wait_state(db, saga_id, "awaiting_inventory")

    refused = await cli(settings, "saga", "compensate", str(saga_id), "--reason", "x")
    assert refused.exit_code == 1
    assert "a command is still in flight" in refused.stderr

    # The order workflow always awaits a command in an active state, so the engine would refuse
    # it forever; clear the awaited set as a state waiting only for an outside event would be.
    async with db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE saga.instances SET runtime = jsonb_set(runtime, '{outstanding}', '[]')"
                " WHERE id = :id"
            ),
            {"id": saga_id},
        )
    result = await cli(
        settings, "saga", "compensate", str(saga_id), "--reason", "warehouse closed", "--by", "cy"
    )
    assert result.exit_code == 0, result.stderr
    assert "awaiting_inventory → compensating" in result.stdout
    assert "sent RefundPayment" in result.stdout
    await wait_state(db, saga_id, "failed")  # the real refund was confirmed by payments
    entries = await history_of(db, saga_id)
    assert_operator_entry(entries, "transitioned", "cy", "warehouse closed")
    assert [e.message_type for e in entries][-1] == "PaymentRefunded"
    async with db.connect() as conn:
        refunds = await conn.scalar(
            select(func.count()).where(
                pay.ledger.c.order_id == order_id(saga_id), pay.ledger.c.kind == "refund"
            )
        )
    assert refunds == 1


async def test_abort_ends_a_stuck_saga(stack: Stack, db: AsyncEngine) -> None:
    settings = stack.settings
    await stack.start("orchestrator")
    await stack.start("payments", failing("ProcessPayment"))
    saga_id = await submit(settings)
    await wait_parked(settings, "payments", 1)

    forward = await cli(settings, "saga", "skip", str(saga_id), "--reason", "x")
    assert forward.exit_code == 1
    assert forward.stderr.strip() == (
        "error: skip from awaiting_payment needs --to one of: cancelled, failed"
    )
    result = await cli(settings, "saga", "abort", order_id(saga_id), "--reason", "fraud check")
    assert result.exit_code == 0, result.stderr
    assert await saga_state(db, saga_id) == "aborted"
    entry = assert_operator_entry(
        await history_of(db, saga_id), "transitioned", "ops-tester", "fraud check"
    )
    assert (entry.from_state, entry.to_state) == ("awaiting_payment", "aborted")
    assert [c["type"] for c in entry.commands] == ["OrderFailed"]

    again = await cli(settings, "saga", "abort", str(saga_id), "--reason", "again")
    assert again.exit_code == 1
    assert again.stderr.strip() == "error: saga is already aborted"
    unknown = await cli(settings, "saga", "show", str(uuid.uuid4()))
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: no saga with id or business key")
