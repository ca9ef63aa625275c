"""One hostile message never stalls the batch it arrives in (issue: a forged header stalled a
whole batch), on a real RabbitMQ through the shared batch loop and DeliveryHandler.

Each test mixes hostile deliveries into a batch of good ones and asserts what a user sees: every
good message is settled, every bad one sits in the parking queue exactly once, and nothing is
left unacknowledged in the work queue.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from contracts.topology import H_ATTEMPT, H_REASON, ParkReason
from sagaline.messaging.batching import BatchConsumer, parse_or_park
from sagaline.messaging.declare import declare_consumer, delete_consumer
from sagaline.messaging.delivery import DeliveryHandler
from sagaline.messaging.publish import envelope_message
from sagaline.settings import Settings
from tests.faults import hostile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GOOD = 30
FORGED_ATTEMPT = 9_223_372_036_854_775_807


class ParseAndAck:
    """The smallest BatchProcessor shaped like the real ones: park what does not parse, ack
    the rest (a stand-in for the committed transaction), record what was applied."""

    def __init__(self, handler: DeliveryHandler) -> None:
        self.handler = handler
        self.applied: list[uuid.UUID] = []

    async def process(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        for delivery, envelope in await parse_or_park(self.handler, deliveries):
            self.applied.append(envelope.correlation_id)
            await delivery.ack()


async def _noop(envelope: Envelope[Any], delivery: AbstractIncomingMessage) -> None:
    return None


@pytest.fixture
async def queue_name(
    settings: Settings, amqp_connection: AbstractRobustConnection
) -> AsyncIterator[str]:
    consumer = f"hostile-{uuid.uuid4().hex[:6]}"
    channel = await amqp_connection.channel()
    await declare_consumer(channel, settings.topology, consumer, [])
    try:
        yield consumer
    finally:
        await delete_consumer(channel, settings.topology, consumer)
        await channel.close()


def _good(saga_id: uuid.UUID) -> aio_pika.Message:
    return envelope_message(
        new_envelope(o.RefundPayment(order_id=f"o-{saga_id}"), correlation_id=saga_id)
    )


def _bad(**properties: Any) -> aio_pika.Message:
    return aio_pika.Message(
        b'{"not": "an envelope"}',
        content_type="application/json",
        message_id=str(uuid.uuid4()),
        **properties,
    )


async def _run_batch(
    settings: Settings,
    connection: AbstractRobustConnection,
    consumer: str,
    hostile: list[aio_pika.Message],
    make_handler: Any = DeliveryHandler,
) -> tuple[ParseAndAck, set[uuid.UUID]]:
    """Publish GOOD good messages with the hostile ones in the middle, consume them in one
    batch, and wait until every good one was applied."""
    topology = settings.topology
    publisher = await connection.channel(publisher_confirms=True)
    good = [uuid.uuid4() for _ in range(GOOD)]
    messages = [_good(saga_id) for saga_id in good]
    messages[GOOD // 2 : GOOD // 2] = hostile
    for message in messages:
        await publisher.default_exchange.publish(message, routing_key=topology.work_queue(consumer))
    await publisher.close()

    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=200)
    handler = make_handler(
        consumer=consumer,
        topology=topology,
        channel=channel,
        process=_noop,
        max_body_bytes=settings.max_body_bytes,
    )
    processor = ParseAndAck(handler)
    batches = BatchConsumer(
        processor, batch_size=100, batch_wait=0.3, workers=1, stopping=asyncio.Event()
    )
    await batches.start(await channel.get_queue(topology.work_queue(consumer)))
    try:
        async with asyncio.timeout(15):
            while len(set(processor.applied)) < GOOD:
                await asyncio.sleep(0.05)
    finally:
        await batches.stop(grace=2)
        await channel.close()
    return processor, set(good)


async def _parked(
    connection: AbstractRobustConnection, settings: Settings, consumer: str, count: int
) -> list[AbstractIncomingMessage]:
    channel = await connection.channel()
    queue = await channel.get_queue(settings.topology.parking_queue(consumer))
    found: list[AbstractIncomingMessage] = []
    try:
        async with asyncio.timeout(10):
            while len(found) < count:
                message = await queue.get(fail=False, no_ack=True)
                if message is None:
                    await asyncio.sleep(0.05)
                else:
                    found.append(message)
        await asyncio.sleep(0.2)  # nothing more arrives: parked exactly once
        assert await queue.get(fail=False, no_ack=True) is None
    finally:
        await channel.close()
    return found


async def _work_queue_is_empty(
    connection: AbstractRobustConnection, settings: Settings, consumer: str
) -> bool:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(settings.topology.work_queue(consumer), passive=True)
        return queue.declaration_result.message_count == 0
    finally:
        await channel.close()


async def test_forged_attempt_header_is_parked_and_the_batch_goes_on(
    settings: Settings, amqp_connection: AbstractRobustConnection, queue_name: str
) -> None:
    hostile = [
        _bad(headers={H_ATTEMPT: FORGED_ATTEMPT}),
        _bad(headers={H_ATTEMPT: -FORGED_ATTEMPT - 1}),
        _bad(headers={H_ATTEMPT: 1e30}),  # (infinity: RabbitMQ itself refuses the publish)
        _bad(headers={H_ATTEMPT: "9" * 5000}),
        _bad(headers={H_REASON: "forged-reason", "x-death": "not a list"}),
    ]
    processor, good = await _run_batch(settings, amqp_connection, queue_name, hostile)

    assert set(processor.applied) == good
    parked = await _parked(amqp_connection, settings, queue_name, len(hostile))
    assert {m.headers.get(H_REASON) for m in parked} == {ParkReason.INVALID_ENVELOPE.value}
    assert all(0 < int(m.headers[H_ATTEMPT]) <= 1_001 for m in parked)  # type: ignore[arg-type]
    assert await _work_queue_is_empty(amqp_connection, settings, queue_name)


class UnencodableParking(DeliveryHandler):
    """Parking copies carry a header the client cannot encode, as an incoming header that
    decodes but does not encode back once did: publishing the copy fails on a healthy channel."""

    def _failure_headers(
        self, delivery: AbstractIncomingMessage, summary: str, attempt: int
    ) -> dict[str, Any]:
        return super()._failure_headers(delivery, summary, attempt) | {"unencodable": 2**64}


async def test_a_message_that_cannot_be_parked_is_dead_lettered_alone(
    settings: Settings, amqp_connection: AbstractRobustConnection, queue_name: str
) -> None:
    processor, good = await _run_batch(
        settings, amqp_connection, queue_name, [_bad()], make_handler=UnencodableParking
    )

    assert set(processor.applied) == good
    (parked,) = await _parked(amqp_connection, settings, queue_name, 1)
    deaths = parked.headers.get("x-death")
    assert isinstance(deaths, list) and deaths[0]["reason"] == "rejected"  # type: ignore[index]
    assert await _work_queue_is_empty(amqp_connection, settings, queue_name)


async def test_forged_timestamp_property_does_not_drop_the_connection(
    settings: Settings,
    amqp_connection: AbstractRobustConnection,
    queue_name: str,
) -> None:
    publisher = await amqp_connection.channel(publisher_confirms=True)
    with hostile.forged_timestamps():
        await publisher.default_exchange.publish(
            _bad(timestamp=datetime.now(UTC)), routing_key=settings.topology.work_queue(queue_name)
        )
    await publisher.close()

    reconnects: list[object] = []
    amqp_connection.reconnect_callbacks.add(lambda *_: reconnects.append(1))
    processor, good = await _run_batch(settings, amqp_connection, queue_name, [])

    assert set(processor.applied) == good
    (parked,) = await _parked(amqp_connection, settings, queue_name, 1)
    assert parked.headers.get(H_REASON) == ParkReason.INVALID_ENVELOPE.value
    assert reconnects == []


class FailingOnce:
    """A batch processor that raises on its first batch before settling anything."""

    def __init__(self) -> None:
        self.calls = 0
        self.acked = 0

    async def process(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("processor bug")
        for delivery in deliveries:
            await delivery.ack()
            self.acked += 1


async def test_a_failed_batch_gives_its_deliveries_back(
    settings: Settings, amqp_connection: AbstractRobustConnection, queue_name: str
) -> None:
    topology = settings.topology
    channel = await amqp_connection.channel(publisher_confirms=True)
    for saga_id in [uuid.uuid4() for _ in range(5)]:
        await channel.default_exchange.publish(
            _good(saga_id), routing_key=topology.work_queue(queue_name)
        )
    processor = FailingOnce()
    batches = BatchConsumer(
        processor,
        batch_size=10,
        batch_wait=0.3,
        workers=1,
        stopping=asyncio.Event(),
        failure_pause=0.0,
    )
    await batches.start(await channel.get_queue(topology.work_queue(queue_name)))
    try:
        async with asyncio.timeout(10):
            while processor.acked < 5:
                await asyncio.sleep(0.05)
    finally:
        await batches.stop(grace=2)
        await channel.close()
    assert processor.calls >= 2
