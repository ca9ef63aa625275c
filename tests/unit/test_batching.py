"""How the batch consumer groups deliveries: no broker, a stand-in queue fed by the test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from sagaline.messaging.batching import BatchConsumer

pytestmark = pytest.mark.timeout(10)

Deliver = Callable[[AbstractIncomingMessage], Awaitable[None]]


class StandInQueue:
    """What BatchConsumer uses of an aio-pika queue: consume and cancel."""

    def __init__(self) -> None:
        self.deliver: Deliver | None = None
        self.cancelled = False

    async def consume(self, callback: Deliver) -> str:
        self.deliver = callback
        return "tag"

    async def cancel(self, tag: str) -> None:
        self.cancelled = True

    async def put(self, *names: str) -> None:
        assert self.deliver is not None
        for name in names:
            await self.deliver(cast(AbstractIncomingMessage, name))


class Recorder:
    """A BatchProcessor that records its batches; `gate` holds a batch in progress."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.seen = asyncio.Condition()

    async def process(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        async with self.seen:
            self.batches.append(list(deliveries))
            self.seen.notify_all()
        await self.gate.wait()

    async def wait_for(self, count: int) -> None:
        async with self.seen:
            await self.seen.wait_for(lambda: sum(map(len, self.batches)) >= count)


def consumer(recorder: Recorder, *, size: int, wait: float, workers: int = 2) -> BatchConsumer:
    return BatchConsumer(
        recorder, batch_size=size, batch_wait=wait, workers=workers, stopping=asyncio.Event()
    )


async def start(batches: BatchConsumer) -> StandInQueue:
    queue = StandInQueue()
    await batches.start(cast(AbstractQueue, queue))
    return queue


async def test_deliveries_waiting_together_make_one_batch_with_several_workers() -> None:
    recorder = Recorder()
    batches = consumer(recorder, size=64, wait=0.0, workers=3)
    queue = await start(batches)
    await queue.put("a", "b", "c", "d", "e")
    await recorder.wait_for(5)
    await batches.stop(grace=1.0)
    assert recorder.batches == [["a", "b", "c", "d", "e"]]


async def test_a_batch_holds_at_most_batch_size_in_arrival_order() -> None:
    recorder = Recorder()
    batches = consumer(recorder, size=3, wait=0.0)
    queue = await start(batches)
    await queue.put(*"abcdefgh")
    await recorder.wait_for(8)
    await batches.stop(grace=1.0)
    assert recorder.batches == [["a", "b", "c"], ["d", "e", "f"], ["g", "h"]]


async def test_a_batch_waits_for_latecomers_until_batch_wait() -> None:
    recorder = Recorder()
    batches = consumer(recorder, size=64, wait=30.0)  # far longer than the test runs
    queue = await start(batches)
    await queue.put("a")
    await asyncio.sleep(0)  # a collector has taken "a" and waits for more
    await queue.put("b")
    assert recorder.batches == []  # still filling
    await queue.put(*(str(i) for i in range(62)))  # the 64th delivery closes the batch
    await recorder.wait_for(64)
    await batches.stop(grace=1.0)
    assert [len(b) for b in recorder.batches] == [64]


async def test_stop_cancels_the_consumer_and_finishes_the_batch_in_hand() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batches = consumer(recorder, size=2, wait=0.0)
    queue = await start(batches)
    await queue.put("a", "b")
    await recorder.wait_for(2)
    stopping = asyncio.create_task(batches.stop(grace=5.0))
    await asyncio.sleep(0)
    assert queue.cancelled and batches.stopping.is_set()
    assert not stopping.done()  # waits for the batch in hand
    recorder.gate.set()
    await stopping
    assert recorder.batches == [["a", "b"]]
