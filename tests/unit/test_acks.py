"""Acknowledgements in as few frames as the order of batches allows, never ahead of the work."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from sagaline.messaging.acks import AckLedger, ack
from sagaline.messaging.batching import BatchConsumer

pytestmark = pytest.mark.timeout(10)


class Channel:
    """The broker's side of one channel: which tags are settled; a frame naming a settled tag
    is refused (RabbitMQ closes the channel with PRECONDITION_FAILED, unknown delivery tag)."""

    def __init__(self) -> None:
        self.is_closed = False
        self.frames: list[tuple[str, int, bool]] = []
        self.delivered: set[int] = set()
        self.settled: set[int] = set()

    def settle(self, kind: str, tag: int, multiple: bool) -> None:
        if tag in self.settled or self.is_closed:
            self.is_closed = True
            raise RuntimeError(f"unknown delivery tag {tag}")
        self.frames.append((kind, tag, multiple))
        covered = {t for t in self.delivered if t <= tag} if multiple else {tag}
        self.settled |= covered


class Delivery:
    """What the ledger uses of an aio-pika delivery: tag, processed, channel, ack, nack."""

    def __init__(self, channel: Channel, tag: int) -> None:
        self.channel = channel
        self.delivery_tag = tag
        self.processed = False  # as aio-pika: set by this delivery's own ack/nack only
        channel.delivered.add(tag)

    async def ack(self, multiple: bool = False) -> None:
        assert not self.processed, f"delivery {self.delivery_tag} settled twice"
        self.channel.settle("ack", self.delivery_tag, multiple)
        self.processed = True

    async def nack(self, requeue: bool = True) -> None:
        assert not self.processed, f"delivery {self.delivery_tag} settled twice"
        self.channel.settle("nack", self.delivery_tag, False)
        self.processed = True

    def __repr__(self) -> str:
        return f"d{self.delivery_tag}"


def deliveries(channel: Channel, *tags: int) -> list[AbstractIncomingMessage]:
    return [cast(AbstractIncomingMessage, Delivery(channel, tag)) for tag in tags]


async def test_a_batch_is_acked_in_one_frame() -> None:
    channel, ledger = Channel(), AckLedger()
    batch = deliveries(channel, 1, 2, 3)
    ledger.take(batch)
    with ledger.current():
        await ack(batch)
    assert channel.frames == [("ack", 3, True)]


async def test_a_later_batch_that_commits_first_waits_for_the_earlier_one() -> None:
    channel, ledger = Channel(), AckLedger()
    first, second = deliveries(channel, 1, 2), deliveries(channel, 3, 4)
    ledger.take(first)
    ledger.take(second)
    await ledger.ack(second)
    assert channel.frames == []  # acking 4 "multiple" now would settle 1 and 2 unfinished
    assert ledger.acked(second[0])
    await ledger.ack(first)
    assert channel.frames == [("ack", 4, True)]


async def test_deliveries_settled_on_their_own_are_stepped_over() -> None:
    channel, ledger = Channel(), AckLedger()
    batch = deliveries(channel, 1, 2, 3)
    ledger.take(batch)
    await batch[1].nack()  # e.g. parked: settled by itself
    await ledger.ack([batch[0], batch[2]])
    assert channel.frames == [("nack", 2, False), ("ack", 3, True)]


async def test_an_unsettled_earlier_delivery_holds_the_acks_until_settled() -> None:
    channel, ledger = Channel(), AckLedger()
    batch = deliveries(channel, 1, 2)
    ledger.take(batch)
    await ledger.ack([batch[1]])
    assert channel.frames == []
    await batch[0].nack()
    await ledger.flush()
    assert channel.frames == [("nack", 1, False), ("ack", 2, True)]


async def test_a_closed_channel_neither_blocks_nor_is_acked_on() -> None:
    old, new, ledger = Channel(), Channel(), AckLedger()
    stale = deliveries(old, 1, 2)
    fresh = deliveries(new, 1)
    ledger.take(stale)
    ledger.take(fresh)
    old.is_closed = True  # reconnected: the broker redelivers what was unsettled
    await ledger.ack(fresh)
    assert (old.frames, new.frames) == ([], [("ack", 1, True)])


async def test_without_a_ledger_each_delivery_is_acked_by_itself() -> None:
    channel = Channel()
    await ack(deliveries(channel, 1, 2))
    assert channel.frames == [("ack", 1, False), ("ack", 2, False)]


async def test_tags_out_of_order_are_acked_one_by_one() -> None:
    channel, ledger = Channel(), AckLedger()
    batch = deliveries(channel, 2, 1)
    ledger.take(batch)
    await ledger.ack(batch)
    assert not ledger.in_order
    assert channel.frames == [("ack", 2, False), ("ack", 1, False)]


async def test_a_gap_in_the_tags_means_deliveries_the_ledger_never_saw() -> None:
    """Another consumer on the channel, say: a multiple ack would settle its deliveries."""
    channel, ledger = Channel(), AckLedger()
    first, later = deliveries(channel, 1), deliveries(channel, 3)
    deliveries(channel, 2)  # delivered elsewhere on the channel, unsettled
    ledger.take(first)
    ledger.take(later)
    await ledger.ack(first + later)
    assert channel.frames == [("ack", 1, False), ("ack", 3, False)]
    assert 2 not in channel.settled


class Queue:
    def __init__(self) -> None:
        self.deliver: Any = None

    async def consume(self, callback: Any) -> str:
        self.deliver = callback
        return "tag"

    async def cancel(self, tag: str) -> None:
        pass


class AckThenFail:
    """Acks the first two deliveries of its batch (their work committed), then fails."""

    def __init__(self) -> None:
        self.done = asyncio.Event()

    async def process(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        await ack(batch[:2])
        self.done.set()
        raise RuntimeError("boom")


async def test_a_failing_batch_gives_back_only_what_it_did_not_ack() -> None:
    channel, processor = Channel(), AckThenFail()
    consumer = BatchConsumer(
        processor,
        batch_size=8,
        batch_wait=0.05,
        workers=1,
        stopping=asyncio.Event(),
        failure_pause=0.0,
    )
    queue = Queue()
    await consumer.start(cast(AbstractQueue, queue))
    for delivery in deliveries(channel, 1, 2, 3):
        await queue.deliver(delivery)
    await processor.done.wait()
    await consumer.stop(grace=1.0)
    # 1 was settled by the multiple ack of 2 without aio-pika knowing: not given back.
    assert channel.frames == [("ack", 2, True), ("nack", 3, False)]
    assert not channel.is_closed
