"""Outbox rows nobody dispatched.

1. A step whose commit went through while its client lost the connection: the orchestrator held
   the batch and retried it, the retry found the message done, and nobody had dispatched the
   step's commands. They must go out at once, not at the relay's next poll (ten minutes in these
   tests), so that the saga finishes. The lost commit is made the way it looks from the
   database: the step committed with its outbox rows unpublished and no NOTIFY; then the same
   event arrives again (the held delivery).
2. A replica that died between acknowledging a batch and publishing its rows leaves them with
   no duplicate to wake anyone: the surviving orchestrators' relay poll publishes them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from sqlalchemy import insert, text

from contracts import order as o
from contracts.envelope import new_envelope
from orchestrator.app import build_store
from orchestrator.engine.model import Incoming
from orchestrator.store.tables import outbox
from sagaline.db import create_engine
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings
from tests.e2e.conftest import System

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_a_step_committed_without_dispatch_sends_its_commands_when_redelivered(
    system: System, settings: Settings
) -> None:
    saga_id = uuid.uuid4()
    submitted = new_envelope(
        o.OrderSubmitted(
            order_id=f"lost-dispatch-{saga_id}",
            customer_id="customer-1",
            amount_cents=1_200,
            currency="EUR",
            card_token="tok_ok",
            lines=(o.OrderLine(sku="lost-dispatch-sku", quantity=1),),
            ship_to=o.Address(country="DE", postcode="10115", city="Berlin"),
        ),
        correlation_id=saga_id,
    )
    engine = create_engine(settings, pool_size=2)
    try:
        store = build_store(settings, engine)
        (result,) = await store.handle_batch(
            [Incoming.from_envelope(submitted)], notify_relay=False
        )
        assert not isinstance(result, Exception) and not result.duplicate
        assert await _unpublished(engine, saga_id) > 0, "the step decided no command"
        waiting = await _state(engine, saga_id)

        connection = await aio_pika.connect_robust(settings.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await publish_envelope(channel, settings.topology.events_exchange, submitted)
        finally:
            await connection.close()

        # The relay polls every ten minutes here: only the sweep the duplicate wakes sends it.
        async with asyncio.timeout(30):
            while await _unpublished(engine, saga_id):
                await asyncio.sleep(0.1)
            # The payment worker answered: the command reached it, not only left the table.
            while await _state(engine, saga_id) == waiting:
                await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def test_a_row_abandoned_by_a_dead_replica_is_published_by_the_relay_poll(
    system: System, settings: Settings, run_id: str
) -> None:
    orchestrator = system.by_name("orchestrator")
    system.stop(orchestrator)
    system.start(orchestrator, {"SAGALINE_RELAY_POLL_SECONDS": "1"})
    system.wait_ready()
    routing_key = f"t{run_id}.abandoned.{uuid.uuid4().hex[:6]}"
    connection = await aio_pika.connect_robust(settings.amqp_url)
    engine = create_engine(settings, pool_size=1)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(settings.topology.events_exchange, routing_key)
        # The first row may go out in the relay's first round at start-up; the second is
        # written after that round, with no NOTIFY, dispatch or duplicate: only a poll finds it.
        for _ in range(2):
            message_id = uuid.uuid4()
            async with engine.begin() as conn:
                await conn.execute(
                    insert(outbox).values(
                        message_id=message_id,
                        saga_id=uuid.uuid4(),
                        exchange=settings.topology.events_exchange,
                        routing_key=routing_key,
                        message_type="AbandonedProbe",
                        body=b"{}",
                        headers={},
                        created_at=datetime.now(UTC),
                    )
                )
            async with asyncio.timeout(15):
                while (message := await queue.get(fail=False)) is None:
                    await asyncio.sleep(0.1)
            await message.ack()
            assert message.message_id == str(message_id)
    finally:
        await engine.dispose()
        await connection.close()


async def _unpublished(engine, saga_id: uuid.UUID) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM saga.outbox WHERE saga_id = :id AND published_at IS NULL"),
            {"id": saga_id},
        )
    return int(count or 0)


async def _state(engine, saga_id: uuid.UUID) -> str:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        state = await conn.scalar(
            text("SELECT state FROM saga.instances WHERE id = :id"), {"id": saga_id}
        )
    return str(state)
