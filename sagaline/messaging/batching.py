"""Batched consumption: deliveries collected into batches, each batch handled in one go.

The orchestrator and the workers share this loop. Each applies a batch in one database
transaction (one commit, one fsync for up to `batch_size` messages) and acknowledges the
deliveries only after that commit, so every guarantee of the per-message path holds; what
differs is only what a batch does, given as a `BatchProcessor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from prometheus_client import CollectorRegistry, Histogram

from contracts.envelope import Envelope
from sagaline.db import hold_through_outage
from sagaline.messaging.acks import AckLedger
from sagaline.messaging.delivery import DeliveryHandler
from sagaline.messaging.errors import PermanentMessageError, error_summary
from sagaline.messaging.stages import StageLog

log = logging.getLogger("sagaline.batching")

T = TypeVar("T")


class BatchProcessor(Protocol):
    async def process(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        """Settle every delivery of the batch: ack, park, or hand it to the per-message path."""


class BatchMetrics:
    """How big the batches are and how long one takes to settle (receive to last ack)."""

    def __init__(self, registry: CollectorRegistry, consumer: str) -> None:
        self.size = Histogram(
            "sagaline_batch_size",
            "Deliveries per batch; its count is the number of batches, its sum of deliveries.",
            ["consumer"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
            registry=registry,
        ).labels(consumer)
        self.seconds = Histogram(
            "sagaline_batch_seconds",
            "Time from a batch's collection until every delivery in it was settled.",
            ["consumer"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        ).labels(consumer)

    def observe(self, size: int, seconds: float) -> None:
        self.size.observe(size)
        self.seconds.observe(seconds)


class BatchConsumer:
    """Collects up to `batch_size` deliveries (or what arrives within `batch_wait` seconds)
    and runs `processor.process` on each batch, with `workers` batches in flight at once."""

    def __init__(
        self,
        processor: BatchProcessor,
        *,
        batch_size: int,
        batch_wait: float,
        workers: int,
        stopping: asyncio.Event,
        metrics: BatchMetrics | None = None,
        failure_pause: float = 1.0,
        stages: StageLog | None = None,
    ) -> None:
        self.processor = processor
        self.stages = stages
        """Bench only: each batch's stage timings (sagaline.messaging.stages)."""
        self.failure_pause = failure_pause
        self.metrics = metrics
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.workers = workers
        self.stopping = stopping
        """Set on stop: outage holds give their deliveries back instead of waiting."""
        self._pending: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._collecting = asyncio.Lock()
        self._acks = AckLedger()
        """The channel's acknowledgements: a batch's acks in one frame (sagaline.messaging.acks)."""
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None

    async def start(self, queue: AbstractQueue) -> None:
        self._queue = queue
        self._tasks = [
            asyncio.create_task(self._work(), name=f"batch-{i}") for i in range(self.workers)
        ]
        put = self._pending.put if self.stages is None else self._timed_put
        self._consumer_tag = await queue.consume(put)

    async def _timed_put(self, delivery: AbstractIncomingMessage) -> None:
        assert self.stages is not None
        self.stages.arrived(delivery)
        await self._pending.put(delivery)

    async def stop(self, grace: float) -> None:
        """Stop taking deliveries, finish the batches in hand, give the rest back."""
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        self.stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), timeout=grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.stages is not None:
            self.stages.close()

    async def _work(self) -> None:
        while True:
            # One worker collects at a time: waiting deliveries fill one batch instead of
            # being dealt out one each to workers that all wait on the queue.
            async with self._collecting:
                batch = await self._collect()
                self._acks.take(batch)  # in the order of the deliveries' tags
            started = time.monotonic()
            timing = self.stages.begin(batch) if self.stages is not None else None
            try:
                with self._acks.current():
                    await self.processor.process(batch)
            except Exception as exc:  # never let one batch kill the consumer
                log.error("batch failed", extra={"error": error_summary(exc), "size": len(batch)})
                await self._give_back(batch)
            finally:
                if timing is not None:
                    assert self.stages is not None
                    self.stages.end(timing)
                self._acks.done(batch)
                for _ in batch:
                    self._pending.task_done()
            # Acks held behind this batch's deliveries (settled on their own, or given back).
            with contextlib.suppress(Exception):  # a closed channel: the broker redelivers
                await self._acks.flush()
            if self.metrics is not None:
                self.metrics.observe(len(batch), time.monotonic() - started)

    async def _give_back(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """Return a failed batch's unsettled deliveries to the queue after a pause, instead of
        holding them unacknowledged for the channel's life (which stalls them, and with a full
        prefetch window the whole consumer). The quorum queue's delivery limit bounds how often
        one delivery can come back this way."""
        unsettled = [d for d in batch if not d.processed and not self._acks.acked(d)]
        if not unsettled:
            return
        await asyncio.sleep(self.failure_pause)
        for delivery in unsettled:
            with contextlib.suppress(Exception):  # a closed channel returns them by itself
                await delivery.nack(requeue=True)

    async def _collect(self) -> list[AbstractIncomingMessage]:
        batch = [await self._pending.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait
        while len(batch) < self.batch_size:
            # Take what is already there without waiting: a full prefetch window fills a
            # batch at once, and a lone message does not pay a timer per waiting step.
            while len(batch) < self.batch_size and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            timeout = deadline - loop.time()
            if len(batch) >= self.batch_size or timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._pending.get(), timeout))
            except TimeoutError:
                break
        return batch


async def parse_or_park(
    handler: DeliveryHandler, deliveries: Sequence[AbstractIncomingMessage]
) -> list[tuple[AbstractIncomingMessage, Envelope[Any]]]:
    """The deliveries whose bodies are valid envelopes; the others are parked with the reason."""
    parsed = []
    for delivery in deliveries:
        try:
            envelope = handler.parse(delivery)
        except PermanentMessageError as exc:
            await handler.park(delivery, exc.reason, exc.summary)
            continue
        parsed.append((delivery, envelope))
    return parsed


async def apply_batch(
    attempt: Callable[[], Awaitable[T]],
    *,
    stopping: asyncio.Event,
    backoff: tuple[float, float],
) -> T | Exception:
    """A batch's transaction, held through a database outage; the exception when it failed
    otherwise (then `settle_one_by_one`)."""
    try:
        return await hold_through_outage(attempt, stopping=stopping, backoff=backoff, what="batch")
    except Exception as exc:
        return exc


async def settle_one_by_one(
    handler: DeliveryHandler,
    parsed: Sequence[tuple[AbstractIncomingMessage, Envelope[Any]]],
    failure: Exception,
) -> None:
    """After a batch failed: a lone message's failure is its own, settled without running it
    again (retry ladder or parking); a larger batch's messages are each handled on their own,
    which finds the culprit and lets the others through."""
    if len(parsed) == 1:
        delivery, envelope = parsed[0]
        await handler.settle_failure(delivery, envelope, failure)
        return
    log.warning(
        "batch failed; handling its messages one by one",
        extra={"error": error_summary(failure), "size": len(parsed)},
    )
    for delivery, _ in parsed:
        await handler(delivery)


class QueueBatches:
    """A background loop: consume one queue on a channel of its own into a BatchConsumer."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        queue: str,
        consumer: BatchConsumer,
        *,
        grace: float,
        prefetch: int | None = None,
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.consumer = consumer
        self.grace = grace
        # By default two batches per worker: the next batch is buffered while one commits.
        self.prefetch = prefetch or consumer.batch_size * consumer.workers * 2

    async def start(self) -> None:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        await self.consumer.start(await channel.get_queue(self.queue))

    async def stop(self) -> None:
        await self.consumer.stop(grace=self.grace)
