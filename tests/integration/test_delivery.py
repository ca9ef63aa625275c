"""Retry with backoff and parking on a real RabbitMQ, through the shared DeliveryHandler."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from contracts.topology import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILED_AT,
    H_LAST_FAILED_AT,
    H_ORIGINAL_QUEUE,
    H_REASON,
)
from sagaline.messaging.declare import declare_consumer, delete_consumer
from sagaline.messaging.delivery import DeliveryHandler, Process
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class FlakyProcess:
    """Fails for the listed saga ids, succeeds for others; records when each attempt ran."""

    def __init__(self, failing: set[uuid.UUID]) -> None:
        self.failing = failing
        self.attempts: dict[uuid.UUID, list[float]] = {}
        self.succeeded: list[uuid.UUID] = []

    async def __call__(self, envelope: Envelope[Any], delivery: AbstractIncomingMessage) -> None:
        self.attempts.setdefault(envelope.correlation_id, []).append(time.monotonic())
        if envelope.correlation_id in self.failing:
            raise RuntimeError("downstream unavailable")
        self.succeeded.append(envelope.correlation_id)


@pytest.fixture
async def probe(
    settings: Settings, amqp_connection: AbstractRobustConnection
) -> AsyncIterator[tuple[str, aio_pika.abc.AbstractChannel]]:
    consumer = f"probe-{uuid.uuid4().hex[:6]}"
    channel = await amqp_connection.channel(publisher_confirms=True, on_return_raises=True)
    topology = settings.topology
    await declare_consumer(
        channel, topology, consumer, [(topology.commands_exchange, f"{consumer}.#")]
    )
    try:
        yield consumer, channel
    finally:
        await delete_consumer(channel, topology, consumer)


async def _consume(
    settings: Settings,
    consumer: str,
    channel: aio_pika.abc.AbstractChannel,
    process: Process,
    **options: Any,
) -> str:
    handler = DeliveryHandler(
        consumer=consumer,
        topology=settings.topology,
        channel=channel,
        process=process,
        max_body_bytes=settings.max_body_bytes,
        **options,
    )
    queue = await channel.get_queue(settings.topology.work_queue(consumer))
    return await queue.consume(handler)


async def _parked(
    settings: Settings, channel: aio_pika.abc.AbstractChannel, consumer: str, count: int
) -> list[AbstractIncomingMessage]:
    queue = await channel.get_queue(settings.topology.parking_queue(consumer))
    found: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(15):
        while len(found) < count:
            message = await queue.get(fail=False, no_ack=True)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                found.append(message)
    return found


def _command(saga_id: uuid.UUID) -> Envelope[o.RefundPayment]:
    return new_envelope(o.RefundPayment(order_id=f"o-{saga_id}"), correlation_id=saga_id)


async def _publish_to_queue(
    channel: aio_pika.abc.AbstractChannel, queue: str, envelope: Envelope[Any]
) -> None:
    from sagaline.messaging.publish import envelope_message

    await channel.default_exchange.publish(envelope_message(envelope), routing_key=queue)


async def test_transient_failure_retries_with_the_configured_delays_then_parks(
    settings: Settings, probe: tuple[str, aio_pika.abc.AbstractChannel]
) -> None:
    consumer, channel = probe
    failing = uuid.uuid4()
    process = FlakyProcess({failing})
    await _consume(settings, consumer, channel, process)
    command = _command(failing)
    await _publish_to_queue(channel, settings.topology.work_queue(consumer), command)

    (parked,) = await _parked(settings, channel, consumer, 1)

    attempts = process.attempts[failing]
    delays = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 1 + len(settings.retry_delays)
    for measured, configured in zip(delays, settings.retry_delays, strict=True):
        assert measured >= configured * 0.9, (delays, settings.retry_delays)
    headers = parked.headers
    assert headers[H_REASON] == "retries-exhausted"
    assert headers[H_ORIGINAL_QUEUE] == settings.topology.work_queue(consumer)
    assert headers[H_ATTEMPT] == len(attempts)
    assert headers[H_ERROR] == "RuntimeError"
    assert headers[H_FIRST_FAILED_AT] <= headers[H_LAST_FAILED_AT]
    assert parked.message_id == str(command.message_id)
    assert parked.body == command.to_json()
    assert parked.correlation_id == str(failing)


async def test_malformed_message_is_parked_at_once_and_the_consumer_keeps_serving(
    settings: Settings, probe: tuple[str, aio_pika.abc.AbstractChannel]
) -> None:
    consumer, channel = probe
    process = FlakyProcess(set())
    await _consume(settings, consumer, channel, process)
    work = settings.topology.work_queue(consumer)
    good_before, good_after = uuid.uuid4(), uuid.uuid4()

    await _publish_to_queue(channel, work, _command(good_before))
    await channel.default_exchange.publish(
        aio_pika.Message(b'{"message_id": ', content_type="application/json", message_id="bad-1"),
        routing_key=work,
    )
    await channel.default_exchange.publish(
        aio_pika.Message(b"<xml/>", content_type="application/xml", message_id="bad-2"),
        routing_key=work,
    )
    await _publish_to_queue(channel, work, _command(good_after))

    parked = await _parked(settings, channel, consumer, 2)
    async with asyncio.timeout(10):
        while len(process.succeeded) < 2:
            await asyncio.sleep(0.02)

    reasons = {m.message_id: m.headers[H_REASON] for m in parked}
    assert reasons == {"bad-1": "malformed-json", "bad-2": "wrong-content-type"}
    assert all(m.headers[H_ATTEMPT] == 1 for m in parked)
    assert set(process.succeeded) == {good_before, good_after}
    # Parked at once: the malformed messages never reached the handler.
    assert set(process.attempts) == {good_before, good_after}


async def test_events_published_by_services_reach_a_bound_queue(
    settings: Settings, probe: tuple[str, aio_pika.abc.AbstractChannel]
) -> None:
    consumer, channel = probe
    process = FlakyProcess(set())
    await _consume(settings, consumer, channel, process)
    exchange = await channel.get_exchange(settings.topology.commands_exchange)
    queue = await channel.get_queue(settings.topology.work_queue(consumer))
    await queue.bind(exchange, "RefundPayment")
    saga = uuid.uuid4()
    await publish_envelope(channel, settings.topology.commands_exchange, _command(saga))
    async with asyncio.timeout(10):
        while saga not in process.succeeded:
            await asyncio.sleep(0.02)


async def test_database_outage_holds_the_delivery_instead_of_burning_retries(
    settings: Settings, probe: tuple[str, aio_pika.abc.AbstractChannel]
) -> None:
    consumer, channel = probe
    calls: list[float] = []

    async def process(envelope: Envelope[Any], delivery: AbstractIncomingMessage) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise ConnectionRefusedError(111, "Connection refused")  # what asyncpg raises

    await _consume(settings, consumer, channel, process, outage_backoff=(0.05, 0.1))
    await _publish_to_queue(channel, settings.topology.work_queue(consumer), _command(uuid.uuid4()))
    async with asyncio.timeout(10):
        while len(calls) < 4:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # let any wrongly scheduled retry (0.2 s) come back

    assert len(calls) == 4
    for delay_ms in settings.topology.retry_delays_ms:
        retry = await channel.get_queue(settings.topology.retry_queue(consumer, delay_ms))
        assert retry.declaration_result.message_count == 0
    parking = await channel.declare_queue(settings.topology.parking_queue(consumer), passive=True)
    assert parking.declaration_result.message_count == 0


async def test_delivery_limit_parks_a_message_that_keeps_crashing_its_consumer(
    settings: Settings, amqp_connection: AbstractRobustConnection
) -> None:
    """The quorum queue's delivery limit is the backstop when our own handling never runs."""
    topology = dataclasses.replace(settings.topology, delivery_limit=2)
    consumer = f"crashy-{uuid.uuid4().hex[:6]}"
    channel = await amqp_connection.channel(publisher_confirms=True)
    await declare_consumer(channel, topology, consumer, [])
    try:
        await _publish_to_queue(channel, topology.work_queue(consumer), _command(uuid.uuid4()))
        queue = await channel.get_queue(topology.work_queue(consumer))
        parking = await channel.get_queue(topology.parking_queue(consumer))
        parked = None
        async with asyncio.timeout(15):
            while parked is None:
                message = await queue.get(fail=False)
                if message is not None:
                    await message.nack(requeue=True)  # as a process dying mid-handling would
                parked = await parking.get(fail=False, no_ack=True)
                await asyncio.sleep(0.02)
        (death,) = parked.headers["x-death"]
        assert death["reason"] == "delivery_limit"
        assert death["queue"] == topology.work_queue(consumer)
    finally:
        await delete_consumer(channel, topology, consumer)


async def test_a_closed_publishing_channel_gives_the_delivery_back_without_counting_an_attempt(
    settings: Settings, probe: tuple[str, aio_pika.abc.AbstractChannel]
) -> None:
    """A worker whose reply channel is not restored yet after a lost broker link: the command
    comes back later and is answered, instead of going through the retry ladder and parking."""
    consumer, channel = probe
    calls: list[float] = []

    async def process(envelope: Envelope[Any], delivery: AbstractIncomingMessage) -> None:
        calls.append(time.monotonic())
        if len(calls) <= len(settings.retry_delays) + 1:  # more than the ladder would allow
            raise aio_pika.exceptions.ChannelInvalidStateError("channel closed")

    await _consume(settings, consumer, channel, process)
    await _publish_to_queue(channel, settings.topology.work_queue(consumer), _command(uuid.uuid4()))
    async with asyncio.timeout(20):
        while len(calls) < len(settings.retry_delays) + 2:
            await asyncio.sleep(0.05)

    for delay_ms in settings.topology.retry_delays_ms:
        retry = await channel.declare_queue(
            settings.topology.retry_queue(consumer, delay_ms), passive=True
        )
        assert retry.declaration_result.message_count == 0
    parking = await channel.declare_queue(settings.topology.parking_queue(consumer), passive=True)
    assert parking.declaration_result.message_count == 0
