"""Batches decided from the snapshot cache, on a real PostgreSQL: the write checks the guess.

A guessed batch skips its read; whatever the read would have told (a saga moved by another
replica, a message already processed, a business key taken) makes the write fall short, and
the batch is decided again from a read with the same outcome as if it had read at once.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from contracts.envelope import new_envelope
from orchestrator.engine import EngineConfig, Incoming, Outcome, UnexpectedMessage
from orchestrator.store import plan as plan_module
from orchestrator.store import snapshot_cache as cache_module
from orchestrator.store import sql as batch_module
from orchestrator.store.saga_store import SagaStore, StepResult
from orchestrator.store.snapshot_cache import SnapshotCache
from orchestrator.store.tables import instances
from orchestrator.workflows import WORKFLOWS
from sagaline.messaging.errors import ReportableError
from sagaline.settings import Settings
from tests.integration.support import FakeClock, order_submitted, reply, sagas_with_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class Replica:
    """One orchestrator process's store: its own snapshot cache and conflict count."""

    def __init__(self, engine: AsyncEngine, settings: Settings, clock: FakeClock) -> None:
        self.conflicts = 0
        self.guesses: list[bool] = []
        """Each guess's outcome, as the metrics see it (True: its write held)."""
        self.store = SagaStore(
            engine,
            settings.topology,
            EngineConfig(step_timeout=timedelta(minutes=2)),
            WORKFLOWS,
            clock=clock,
            on_conflict=self._count,
            snapshots=SnapshotCache(100, observe=self.guesses.append),
        )

    def _count(self) -> None:
        self.conflicts += 1

    async def step(self, incoming: Incoming) -> StepResult:
        """As the intake applies a batch (of one here): guessing where it can."""
        (result,) = await self.store.handle_batch([incoming], notify_relay=False, guess=True)
        assert not isinstance(result, ReportableError), result
        return result


@pytest.fixture
def replicas(engine: AsyncEngine, settings: Settings) -> tuple[Replica, Replica]:
    clock = FakeClock()
    return Replica(engine, settings, clock), Replica(engine, settings, clock)


async def saga_row(engine: AsyncEngine, saga_id: uuid.UUID) -> tuple[str, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(instances.c.state, instances.c.version).where(instances.c.id == saga_id)
            )
        ).one()
    return row.state, row.version


def outstanding(result: StepResult) -> uuid.UUID:
    assert result.decision is not None
    (command,) = [o.message_id for o in result.decision.outgoing if o.kind == "command"]
    return command


def paid(order_id: str, saga_id: uuid.UUID, command_id: uuid.UUID) -> Incoming:
    payment = o.PaymentProcessed(order_id=order_id, payment_id="p-1", amount_cents=1000)
    return reply(payment, saga_id, command_id)


async def test_a_reply_to_its_own_command_is_decided_without_a_read(
    replicas: tuple[Replica, Replica], engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica, _ = replicas

    async def no_read(*_: object) -> None:
        raise AssertionError("the batch read its sagas")

    monkeypatch.setattr(batch_module, "read", no_read)
    submitted = order_submitted()
    started = await replica.step(Incoming.from_envelope(submitted))
    payment = outstanding(started)
    moved = await replica.step(paid(submitted.payload.order_id, started.saga_id, payment))

    assert moved.decision is not None and moved.decision.outcome is Outcome.TRANSITIONED
    assert await saga_row(engine, started.saga_id) == ("awaiting_inventory", 2)


async def test_the_cache_keeps_the_text_the_write_sent_without_encoding_it_again(
    replicas: tuple[Replica, Replica], engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica, _ = replicas

    def encoded_again(_: object) -> str:
        raise AssertionError("the cache encoded a saga the write had encoded")

    monkeypatch.setattr(cache_module, "json_text", encoded_again)
    submitted = order_submitted()
    started = await replica.step(Incoming.from_envelope(submitted))
    await replica.step(paid(submitted.payload.order_id, started.saga_id, outstanding(started)))

    cached = replica.store.snapshots.guess(
        [Incoming.timer(started.saga_id, "t", uuid.uuid4())], [None]
    )
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                select(instances.c.data, instances.c.runtime).where(
                    instances.c.id == started.saga_id
                )
            )
        ).one()
    assert cached is not None
    assert cached[started.saga_id].data == stored.data
    assert cached[started.saga_id].runtime.to_json() == stored.runtime


async def test_a_saga_another_replica_moved_is_decided_from_a_read(
    replicas: tuple[Replica, Replica], engine: AsyncEngine
) -> None:
    first, second = replicas
    submitted = order_submitted()
    order_id = submitted.payload.order_id
    started = await first.step(Incoming.from_envelope(submitted))  # first remembers version 1
    moved = await second.step(paid(order_id, started.saga_id, outstanding(started)))
    reserved = reply(o.InventoryReserved(order_id=order_id), started.saga_id, outstanding(moved))

    result = await first.step(reserved)  # its version 1 is stale: the write falls short

    assert result.decision is not None and result.decision.outcome is Outcome.TRANSITIONED
    assert result.decision.to_state == "awaiting_shipment"
    assert await saga_row(engine, started.saga_id) == ("awaiting_shipment", 3)
    assert (first.conflicts, result.conflicts) == (0, 0)  # a missed guess is not a race


async def test_a_start_delivered_again_is_a_duplicate_wherever_it_lands(
    replicas: tuple[Replica, Replica], engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = replicas
    submitted = order_submitted()
    await first.step(Incoming.from_envelope(submitted))
    writes = 0
    write = batch_module.write

    async def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal writes
        writes += 1
        await write(*args, **kwargs)

    monkeypatch.setattr(batch_module, "write", counted)

    again_here = await first.step(Incoming.from_envelope(submitted))  # its saga is cached
    again_there = await second.step(Incoming.from_envelope(submitted))  # taken as a new saga

    assert again_here.duplicate and again_there.duplicate
    assert writes == 4  # each: the guess that fell short, then the read's (nothing to write)
    assert await saga_row(engine, submitted.correlation_id) == ("awaiting_payment", 1)


async def test_a_second_saga_for_a_taken_business_key_is_a_duplicate_start(
    replicas: tuple[Replica, Replica], engine: AsyncEngine
) -> None:
    first, second = replicas
    submitted = order_submitted()
    await first.step(Incoming.from_envelope(submitted))
    other_saga = uuid.uuid4()
    same_order = new_envelope(submitted.payload, correlation_id=other_saga)

    result = await second.step(Incoming.from_envelope(same_order))

    assert result.decision is not None
    assert result.decision.outcome is Outcome.DUPLICATE_START
    assert result.saga_id == submitted.correlation_id
    assert await sagas_with_key(engine, submitted.payload.order_id) == 1


async def test_a_refusal_in_a_guessed_batch_is_checked_against_a_read(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refused step leaves no inbox row, so the write cannot tell a refusal of a message
    # already processed (a duplicate, to be acked) from a new one. Here the guessed plan of a
    # redelivered start refuses it, as a workflow action may (DocumentLookupError is one).
    replica, _ = replicas
    submitted = order_submitted()
    await replica.step(Incoming.from_envelope(submitted))
    decisions = 0
    decide = plan_module.decide

    def refusing_first(*args: Any, **kwargs: Any) -> Any:
        nonlocal decisions
        decisions += 1
        if decisions == 1:
            raise UnexpectedMessage("refused by an action")
        return decide(*args, **kwargs)

    monkeypatch.setattr(plan_module, "decide", refusing_first)
    again = await replica.step(Incoming.from_envelope(submitted))

    assert again.duplicate


async def test_a_guessed_batch_that_loses_a_deadlock_is_a_conflict_not_a_wrong_guess(
    replicas: tuple[Replica, Replica], engine: AsyncEngine
) -> None:
    # Another writer locks the batch's second saga, the batch's write locks the first and
    # waits for the second, and the other writer then asks for the first: PostgreSQL rolls
    # the batch back (deadlock_detected). The batch's guess was right; it lost a race, as a
    # batch that read would have.
    replica, _ = replicas
    first, second = order_submitted(), order_submitted()
    started = [await replica.step(Incoming.from_envelope(e)) for e in (first, second)]
    batch = [
        paid(envelope.payload.order_id, result.saga_id, outstanding(result))
        for envelope, result in zip((first, second), started, strict=True)
    ]
    async with engine.connect() as other:
        await other.execute(text("SET LOCAL deadlock_timeout = '60s'"))  # the batch detects it
        await other.execute(
            text("SELECT 1 FROM saga.instances WHERE id = :id FOR UPDATE"),
            {"id": second.correlation_id},
        )
        stepping = asyncio.create_task(
            replica.store.handle_batch(batch, notify_relay=False, guess=True)
        )
        try:
            await waiting_for_a_lock(engine)
            await other.execute(
                text("SELECT 1 FROM saga.instances WHERE id = :id FOR UPDATE"),
                {"id": first.correlation_id},
            )
            await other.rollback()
            results = await asyncio.wait_for(stepping, timeout=30)
        finally:
            stepping.cancel()

    assert all(isinstance(r, StepResult) and r.decision for r in results)
    assert replica.conflicts == 1
    assert replica.guesses == [True, True]  # the two starts; the lost batch is no guess's miss
    for envelope in (first, second):
        assert await saga_row(engine, envelope.correlation_id) == ("awaiting_inventory", 2)


async def waiting_for_a_lock(engine: AsyncEngine) -> None:
    """Until some backend of this database waits for a row lock."""
    async with asyncio.timeout(10):
        while True:
            async with engine.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            if waiting:
                return
            await asyncio.sleep(0.01)
