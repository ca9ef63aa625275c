"""The saga store on a real PostgreSQL: one transaction per step, CAS, inbox, outbox, timers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from contracts.envelope import Envelope
from orchestrator.dispatch_marks import PendingMarks
from orchestrator.engine import EngineConfig, Incoming, Outcome
from orchestrator.intake import SingleIntake
from orchestrator.store import sql as batch_module
from orchestrator.store.saga_store import NOTIFY_CHANNEL, SagaStore, unpublished_count
from orchestrator.store.sql import ConcurrencyConflict
from orchestrator.store.tables import history, instances, outbox, timers
from orchestrator.timers import TimerLoop
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_engine
from sagaline.settings import Settings
from tests.integration.support import FakeClock, order_submitted, reply, sagas_with_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

STEP_TIMEOUT = timedelta(minutes=2)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(engine: AsyncEngine, settings: Settings, clock: FakeClock) -> SagaStore:
    return SagaStore(
        engine, settings.topology, EngineConfig(step_timeout=STEP_TIMEOUT), WORKFLOWS, clock=clock
    )


async def _awaiting_payment(
    store: SagaStore, engine: AsyncEngine
) -> tuple[Envelope[o.OrderSubmitted], uuid.UUID, uuid.UUID]:
    """A started order: its submission, its saga id and the payment command it waits on."""
    submitted = order_submitted()
    saga_id = submitted.correlation_id
    await store.handle(Incoming.from_envelope(submitted))
    return submitted, saga_id, await _outstanding_command(engine, saga_id)


def first_two_reads_meet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first two batch reads wait for each other, so both decide before either writes;
    later reads (the loser's retry) pass."""
    barrier = asyncio.Barrier(2)
    original = batch_module.read
    calls = 0

    async def racing_read(conn, incomings, start_keys):  # type: ignore[no-untyped-def]
        nonlocal calls
        read = await original(conn, incomings, start_keys)
        calls += 1
        if calls <= 2:
            await asyncio.wait_for(barrier.wait(), timeout=5)
        return read

    monkeypatch.setattr(batch_module, "read", racing_read)


async def _outstanding_command(engine: AsyncEngine, saga_id: uuid.UUID) -> uuid.UUID:
    async with engine.connect() as conn:
        runtime = await conn.scalar(select(instances.c.runtime).where(instances.c.id == saga_id))
    (command_id,) = runtime["outstanding"]
    return uuid.UUID(command_id)


async def test_start_writes_instance_history_outbox_and_timer(
    store: SagaStore, engine: AsyncEngine
) -> None:
    submitted = order_submitted()
    result = await store.handle(Incoming.from_envelope(submitted))

    assert result.decision is not None and result.decision.outcome is Outcome.STARTED
    async with engine.connect() as conn:
        row = (await conn.execute(select(instances).where(instances.c.id == result.saga_id))).one()
        commands = (
            (
                await conn.execute(
                    select(outbox.c.message_type).where(outbox.c.saga_id == result.saga_id)
                )
            )
            .scalars()
            .all()
        )
        timer_names = (
            (await conn.execute(select(timers.c.name).where(timers.c.saga_id == result.saga_id)))
            .scalars()
            .all()
        )
        entries = await conn.scalar(
            select(func.count()).select_from(history).where(history.c.saga_id == result.saga_id)
        )
    assert (row.state, row.version) == ("awaiting_payment", 1)
    assert "card_token" not in row.data
    assert commands == ["ProcessPayment"]
    assert timer_names == ["step-timeout"]
    assert entries == 1


async def test_duplicate_message_id_is_a_no_op(store: SagaStore, engine: AsyncEngine) -> None:
    incoming = Incoming.from_envelope(order_submitted())
    first = await store.handle(incoming)
    second = await store.handle(incoming)

    assert not first.duplicate and second.duplicate
    async with engine.connect() as conn:
        outbox_rows = await conn.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.saga_id == incoming.saga_id)
        )
        history_rows = await conn.scalar(
            select(func.count()).select_from(history).where(history.c.saga_id == incoming.saga_id)
        )
    assert (outbox_rows, history_rows) == (1, 1)


async def test_duplicate_business_key_is_recorded_on_the_existing_saga(
    store: SagaStore, engine: AsyncEngine
) -> None:
    first = order_submitted()
    again = first.model_copy(update={"message_id": uuid.uuid4(), "correlation_id": uuid.uuid4()})
    await store.handle(Incoming.from_envelope(first))
    result = await store.handle(Incoming.from_envelope(again))

    assert result.decision is not None and result.decision.outcome is Outcome.DUPLICATE_START
    assert result.saga_id == first.correlation_id
    assert await sagas_with_key(engine, first.payload.order_id) == 1


async def test_concurrent_transitions_of_one_saga_both_apply_in_order(
    store: SagaStore, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted, saga_id, payment = await _awaiting_payment(store, engine)

    # Both steps read version 1 before either writes: one of them must lose the CAS and retry.
    first_two_reads_meet(monkeypatch)
    conflicts = 0

    def count() -> None:
        nonlocal conflicts
        conflicts += 1

    store.on_conflict = count
    cancel = Incoming.from_envelope(
        order_submitted(saga_id).model_copy(update={"message_id": uuid.uuid4()})
    )
    cancel = Incoming(
        message_id=uuid.uuid4(),
        saga_id=saga_id,
        trigger=o.OrderCancellationRequested.message_type,
        payload=o.OrderCancellationRequested(
            order_id=submitted.payload.order_id, reason="changed mind"
        ),
    )
    paid = reply(
        o.PaymentProcessed(
            order_id=submitted.payload.order_id, payment_id="p-1", amount_cents=1000
        ),
        saga_id,
        payment,
    )
    results = await asyncio.gather(store.handle(cancel), store.handle(paid))

    assert conflicts >= 1
    assert all(
        r.decision is not None and r.decision.outcome is Outcome.TRANSITIONED for r in results
    )
    async with engine.connect() as conn:
        row = (await conn.execute(select(instances).where(instances.c.id == saga_id))).one()
        order = (
            (
                await conn.execute(
                    select(history.c.message_type)
                    .where(history.c.saga_id == saga_id)
                    .order_by(history.c.id)
                )
            )
            .scalars()
            .all()
        )
        versions = (
            (
                await conn.execute(
                    select(history.c.version)
                    .where(history.c.saga_id == saga_id)
                    .order_by(history.c.id)
                )
            )
            .scalars()
            .all()
        )
    # No lost update: the cancellation flag and the payment are both in the final state,
    # whichever of the two won the race.
    assert row.version == 3
    assert versions == [1, 2, 3]
    assert row.data["cancel_requested"] is True
    assert row.data["payment_id"] == "p-1"
    assert order in (
        ["OrderSubmitted", "OrderCancellationRequested", "PaymentProcessed"],
        ["OrderSubmitted", "PaymentProcessed", "OrderCancellationRequested"],
    )
    # Cancel first: the payment reply starts the refund. Payment first: the cancel waits for
    # the inventory step in flight.
    expected = "compensating" if order[1] == "OrderCancellationRequested" else "awaiting_inventory"
    assert row.state == expected


async def test_one_message_delivered_twice_at_once_is_applied_once(
    store: SagaStore, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted, saga_id, payment = await _awaiting_payment(store, engine)
    paid = reply(
        o.PaymentProcessed(
            order_id=submitted.payload.order_id, payment_id="p-1", amount_cents=1000
        ),
        saga_id,
        payment,
    )
    # Two replicas got the same delivery (a redelivery after a lost ack): both read "never
    # seen" before either writes.
    first_two_reads_meet(monkeypatch)
    results = await asyncio.gather(store.handle(paid), store.handle(paid))

    assert sorted(r.duplicate for r in results) == [False, True]
    async with engine.connect() as conn:
        version = await conn.scalar(select(instances.c.version).where(instances.c.id == saga_id))
        steps = await conn.scalar(
            select(func.count()).select_from(history).where(history.c.saga_id == saga_id)
        )
        commands = await conn.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.saga_id == saga_id)
        )
    assert (version, steps, commands) == (2, 2, 2)  # start + payment, one command each


async def test_outbox_rows_survive_a_crash_and_are_published_by_the_relay(
    settings: Settings, store: SagaStore, engine: AsyncEngine
) -> None:
    import aio_pika

    from contracts.routes import WORKER_COMMANDS
    from orchestrator.relay import OutboxRelay
    from sagaline.messaging.declare import declare_consumer

    submitted = order_submitted()
    await store.handle(Incoming.from_envelope(submitted))
    # "Crash": every connection of the process that wrote the step goes away unpublished.
    await engine.dispose()
    restarted = create_engine(settings, pool_size=2)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        async with restarted.begin() as conn:
            assert await unpublished_count(conn) >= 1
            # Other tests share this database and leave rows for namespaces already deleted:
            # this test is about its own saga's row.
            await conn.execute(
                update(outbox)
                .where(
                    outbox.c.saga_id != submitted.correlation_id, outbox.c.published_at.is_(None)
                )
                .values(published_at=func.now())
            )
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = settings.topology
        for worker, commands in WORKER_COMMANDS.items():
            bindings = [(topology.commands_exchange, c.message_type) for c in commands]
            await declare_consumer(channel, topology, worker, bindings)
        relay = OutboxRelay(restarted, connection, commands_exchange=topology.commands_exchange)
        while await relay.publish_batch():
            pass
        async with restarted.connect() as conn:
            assert await unpublished_count(conn) == 0
        queue = await channel.get_queue(topology.work_queue("payments"))
        found = False
        async with asyncio.timeout(10):
            while not found:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                found = message.correlation_id == str(submitted.correlation_id)
        assert found
    finally:
        await connection.close()
        await restarted.dispose()


async def test_step_timeout_fires_once_from_the_injected_clock(
    store: SagaStore, engine: AsyncEngine, clock: FakeClock
) -> None:
    submitted = order_submitted()
    await store.handle(Incoming.from_envelope(submitted))
    loop = TimerLoop(store)

    assert await _fire_for(loop, submitted.correlation_id) == 0
    clock.advance(STEP_TIMEOUT + timedelta(seconds=1))
    assert await _fire_for(loop, submitted.correlation_id) == 1
    assert await _fire_for(loop, submitted.correlation_id) == 0

    async with engine.connect() as conn:
        row = (
            await conn.execute(select(instances).where(instances.c.id == submitted.correlation_id))
        ).one()
    # A timed-out payment may have charged: the saga refunds it (the worker voids if not).
    assert row.state == "compensating"
    assert row.runtime["compensations"][-1]["command"] == "RefundPayment"


async def test_a_timer_replaced_by_the_next_step_never_fires_for_the_old_step(
    store: SagaStore, engine: AsyncEngine, clock: FakeClock
) -> None:
    submitted, saga_id, payment = await _awaiting_payment(store, engine)
    clock.advance(STEP_TIMEOUT - timedelta(seconds=1))  # the reply comes just before the deadline
    await store.handle(
        reply(
            o.PaymentProcessed(
                order_id=submitted.payload.order_id, payment_id="p", amount_cents=1000
            ),
            saga_id,
            payment,
        )
    )
    clock.advance(timedelta(seconds=2))  # past the first deadline, before the second

    loop = TimerLoop(store)
    assert await _fire_for(loop, saga_id) == 0
    async with engine.connect() as conn:
        state = await conn.scalar(select(instances.c.state).where(instances.c.id == saga_id))
    assert state == "awaiting_inventory"


async def test_timers_due_while_stopped_fire_once_in_due_order_after_restart(
    settings: Settings, engine: AsyncEngine, clock: FakeClock
) -> None:
    config = EngineConfig(step_timeout=STEP_TIMEOUT)
    before = SagaStore(engine, settings.topology, config, WORKFLOWS, clock=clock)
    sagas = []
    for _ in range(5):
        submitted = order_submitted()
        await before.handle(Incoming.from_envelope(submitted))
        sagas.append(submitted.correlation_id)
        clock.advance(timedelta(seconds=1))

    # The orchestrator is "down" for an hour; a new store and loop start with the later clock.
    clock.advance(timedelta(hours=1))
    after = SagaStore(engine, settings.topology, config, WORKFLOWS, clock=clock)
    loop = TimerLoop(after)
    fired = await loop.fire_due()
    assert fired >= 5
    assert await loop.fire_due() == 0
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(history.c.saga_id, history.c.id)
                .where(history.c.message_type == "timer:step-timeout", history.c.saga_id.in_(sagas))
                .order_by(history.c.id)
            )
        ).all()
    assert [r.saga_id for r in rows] == sagas


async def _fire_for(loop: TimerLoop, saga_id: uuid.UUID) -> int:
    """Fire due timers and count how many fired for this saga (other tests share the table)."""
    async with loop.store.engine.connect() as conn:
        before = await conn.scalar(
            select(func.count())
            .select_from(history)
            .where(history.c.saga_id == saga_id, history.c.actor == "timer")
        )
    await loop.fire_due()
    async with loop.store.engine.connect() as conn:
        after = await conn.scalar(
            select(func.count())
            .select_from(history)
            .where(history.c.saga_id == saga_id, history.c.actor == "timer")
        )
    return int(after or 0) - int(before or 0)


async def test_a_commit_with_outbox_rows_wakes_the_relay_unless_the_caller_publishes_them(
    store: SagaStore, settings: Settings, clock: FakeClock
) -> None:
    listener = await asyncpg.connect(settings.database_url)
    woken: list[str] = []
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: woken.append(args[2]))

    async def wake_ups() -> int:
        # A notification committed before this round trip reaches us before its answer.
        await listener.fetchval("SELECT 1")
        await asyncio.sleep(0)  # asyncpg runs listener callbacks on the next loop turn
        return len(woken)

    try:
        intake = order_submitted()  # the orchestrator's intake publishes its batch's commands
        await store.handle_batch([Incoming.from_envelope(intake)], notify_relay=False)
        assert await wake_ups() == 0

        submitted = order_submitted()  # any other writer leaves its rows to the relay
        await store.handle(Incoming.from_envelope(submitted))
        assert await wake_ups() == 1

        clock.advance(STEP_TIMEOUT + timedelta(seconds=1))  # a timer's RefundPayment too
        assert await _fire_for(TimerLoop(store), submitted.correlation_id) == 1
        assert await wake_ups() >= 2
    finally:
        await listener.close()


async def test_a_step_that_leaves_its_rows_to_its_caller_leases_them_and_a_late_duplicate_sweeps(
    store: SagaStore, engine: AsyncEngine
) -> None:
    """The intake's batch leases its outbox rows (the relay loop leaves them to its dispatch).
    When the batch failed after its commit went through, its messages come back one by one and
    are duplicates: nobody dispatched their rows, so the one-by-one path asks for a sweep."""
    intake = order_submitted()
    (result,) = await store.handle_batch([Incoming.from_envelope(intake)], notify_relay=False)
    assert not isinstance(result, Exception) and result.outbox
    async with engine.connect() as conn:
        remaining = await conn.scalar(
            select(func.min(outbox.c.dispatch_until - func.now())).where(
                outbox.c.saga_id == intake.correlation_id
            )
        )
    assert timedelta(seconds=4) < remaining <= store.dispatch_lease

    sweeps: list[str] = []
    one_by_one = SingleIntake(store, lambda step: None, sweep=lambda: sweeps.append("sweep"))
    delivery = cast(AbstractIncomingMessage, SimpleNamespace(headers={}))
    await one_by_one(order_submitted(), delivery)  # a fresh step: its rows wake the relay
    assert sweeps == []
    await one_by_one(intake, delivery)
    assert sweeps == ["sweep"]


async def _published_at(engine: AsyncEngine, saga_id: uuid.UUID) -> set[datetime | None]:
    async with engine.connect() as conn:
        rows = await conn.scalars(select(outbox.c.published_at).where(outbox.c.saga_id == saga_id))
        return set(rows)


async def test_the_next_write_marks_the_rows_earlier_dispatches_confirmed(
    store: SagaStore, engine: AsyncEngine
) -> None:
    """A dispatch's confirmed rows are marked sent by the next batch's write, at the time of
    their confirm, with no statement of their own."""
    flushed: list[object] = []

    async def no_flush(marks: object) -> None:
        flushed.append(marks)

    store.pending_marks = PendingMarks(no_flush, linger=3600)
    dispatched = order_submitted()
    (result,) = await store.handle_batch([Incoming.from_envelope(dispatched)], notify_relay=False)
    assert not isinstance(result, Exception) and result.outbox
    assert await _published_at(engine, dispatched.correlation_id) == {None}
    confirmed_at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    store.pending_marks.add([m.message_id for m in result.outbox], confirmed_at)

    await store.handle_batch([Incoming.from_envelope(order_submitted())], notify_relay=False)
    assert await _published_at(engine, dispatched.correlation_id) == {confirmed_at}
    assert store.pending_marks.pending() == set()
    assert flushed == []


async def test_marks_taken_by_a_write_that_did_not_commit_are_written_by_its_retry(
    store: SagaStore, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_flush(marks: object) -> None:
        raise AssertionError("the retry marks them")

    store.pending_marks = PendingMarks(no_flush, linger=3600)
    dispatched = order_submitted()
    (result,) = await store.handle_batch([Incoming.from_envelope(dispatched)], notify_relay=False)
    assert not isinstance(result, Exception)
    confirmed_at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    store.pending_marks.add([m.message_id for m in result.outbox], confirmed_at)

    original, calls = batch_module.write, []

    async def conflict_once(conn, plan, **options):  # type: ignore[no-untyped-def]
        calls.append(len(options["marks"]))
        if len(calls) == 1:  # lost a race after taking the marks: nothing of it was kept
            raise ConcurrencyConflict("a concurrent step")
        await original(conn, plan, **options)

    monkeypatch.setattr(batch_module, "write", conflict_once)
    await store.handle_batch([Incoming.from_envelope(order_submitted())], notify_relay=False)
    assert calls == [len(result.outbox), len(result.outbox)]
    assert await _published_at(engine, dispatched.correlation_id) == {confirmed_at}
