"""A batch's acknowledgements in one `multiple` frame, on a real RabbitMQ: never ahead of the work.

A `multiple` ack settles every unsettled delivery of the channel up to its tag. These tests
run the batch consumer with several batches in flight on its own channel and check at the
broker that nothing another batch still holds is settled (closing the channel brings it back),
and that deliveries given back, dropped or left behind by a failing batch neither block the
acks nor make the broker close the channel (a frame naming a tag it already settled does).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from sagaline.messaging.acks import ack
from sagaline.messaging.batching import BatchConsumer
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DEADLINE = 20.0


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[str]:
    name = f"{settings.namespace}.acks-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=False)
        yield name
        await channel.queue_delete(name)
    finally:
        await connection.close()


async def publish(settings: Settings, queue: str, bodies: Sequence[str]) -> None:
    async with await aio_pika.connect(settings.amqp_url) as connection:
        channel = await connection.channel()  # confirms: all are queued when this returns
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body.encode()), queue)


async def drain(settings: Settings, queue: str) -> list[str]:
    """What the queue holds, taken out (after the consumer's channel closed)."""
    bodies: list[str] = []
    async with await aio_pika.connect(settings.amqp_url) as connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        while (message := await source.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body.decode())
    return bodies


async def consume(
    settings: Settings, queue: str, processor: object, *, workers: int
) -> tuple[AbstractConnection, AbstractChannel, BatchConsumer]:
    connection = await aio_pika.connect(settings.amqp_url)  # not robust: a closure shows
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=64)
    consumer = BatchConsumer(
        processor,  # type: ignore[arg-type]
        batch_size=4,
        batch_wait=0.02,
        workers=workers,
        stopping=asyncio.Event(),
        failure_pause=0.0,
    )
    await consumer.start(await channel.get_queue(queue))
    return connection, channel, consumer


async def until(condition: asyncio.Event) -> None:
    await asyncio.wait_for(condition.wait(), DEADLINE)


class HoldOne:
    """The batch holding HELD waits for `release`; every other batch is acked at once."""

    HELD = "m05"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.held: list[AbstractIncomingMessage] = []
        self.acked: list[str] = []

    async def process(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        bodies = [d.body.decode() for d in batch]
        if self.HELD in bodies:
            self.held = list(batch)
            await self.release.wait()
        else:
            await ack(batch)
            self.acked.extend(bodies)


async def test_acks_of_later_batches_wait_for_an_earlier_batch_still_in_hand(
    settings: Settings, queue: str
) -> None:
    bodies = [f"m{i:02d}" for i in range(16)]
    await publish(settings, queue, bodies)
    processor = HoldOne()
    connection, channel, consumer = await consume(settings, queue, processor, workers=4)
    try:
        # Wait until every batch but the held one has acked through the ledger.
        for _ in range(int(DEADLINE / 0.02)):
            if processor.held and len(processor.acked) + len(processor.held) == len(bodies):
                break
            await asyncio.sleep(0.02)
        held = [d.body.decode() for d in processor.held]
        first_held = min(d.delivery_tag or 0 for d in processor.held)
        assert not channel.is_closed
    finally:
        await connection.close()  # the held batch never finished: the broker takes it back
        processor.release.set()
        await consumer.stop(grace=1.0)
    back = await drain(settings, queue)
    assert set(held) <= set(back), "a multiple ack settled a batch still in hand"
    # Everything delivered after the held batch's first delivery was held behind it.
    assert set(bodies[first_held - 1 :]) <= set(back)
    assert len(back) == len(set(back))


class Mixed:
    """Per body: 'back-*' is given back once (nack, requeue), 'drop-*' rejected (a parked
    message's stand-in), 'fail-*' acks the rest of its batch then fails the batch; every
    other delivery is acked through the ledger."""

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.acked: list[str] = []
        self.given_back: set[str] = set()
        self.failed = False
        self.finished = asyncio.Event()

    async def process(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        done: list[AbstractIncomingMessage] = []
        for delivery in batch:
            body = delivery.body.decode()
            if body.startswith("back-") and body not in self.given_back:
                self.given_back.add(body)
                await delivery.nack(requeue=True)
            elif body.startswith("drop-"):
                await delivery.reject(requeue=False)
            elif not body.startswith("fail-") or self.failed:
                done.append(delivery)
        await ack(done)
        self.acked.extend(d.body.decode() for d in done)
        if self.expected <= set(self.acked):
            self.finished.set()
        if not self.failed and any(d.body.startswith(b"fail-") for d in batch):
            self.failed = True
            raise RuntimeError("the batch failed after its acks were sent")


async def test_given_back_dropped_and_failed_deliveries_neither_block_nor_close_the_channel(
    settings: Settings, queue: str
) -> None:
    bodies = [f"ok-{i:02d}" for i in range(24)]
    bodies[3], bodies[9], bodies[14], bodies[18] = "back-a", "drop-a", "fail-a", "back-b"
    await publish(settings, queue, bodies)
    expected = {b for b in bodies if not b.startswith("drop-")}
    processor = Mixed(expected)
    connection, channel, consumer = await consume(settings, queue, processor, workers=3)
    closed: list[BaseException | None] = []
    channel.close_callbacks.add(lambda _channel, exc: closed.append(exc))
    try:
        await until(processor.finished)
        await asyncio.sleep(0.2)  # the last flush, and any refusal the broker would send
        assert closed == [] and not channel.is_closed
        await consumer.stop(grace=2.0)
    finally:
        await connection.close()
    assert await drain(settings, queue) == [], "an acked delivery came back or one was left"
    # The failed batch's deliveries acked before it failed were not given back and run again.
    assert sorted(processor.acked) == sorted(expected)
