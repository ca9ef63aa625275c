"""A step whose commit went through while its client lost the connection: the orchestrator held
the batch and retried it, the retry found the message done, and nobody had dispatched the
step's commands. They must go out at once, not at the relay's next poll (ten minutes in these
tests), so that the saga finishes.

The lost commit is made here the way it looks from the database: the step committed with its
outbox rows unpublished and no NOTIFY; then the same event arrives again (the held delivery)."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
from sqlalchemy import text

from contracts import order as o
from contracts.envelope import new_envelope
from orchestrator.app import build_store
from orchestrator.engine.model import Incoming
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
