"""Batched intake: the orchestrator's hot path from its queue to committed saga steps.

Deliveries are collected into batches (up to `batch_size` messages or `batch_wait` seconds)
and each batch is applied in one database transaction, then its deliveries are acknowledged.
This is DESIGN.md's measured way to approach the broker's own ceiling: per-message
transactions cost one fsync each, and FastStream's per-message path costs ~2x raw aio-pika.

Every guarantee of the per-message path holds: a message is acked only after its step
committed; permanent refusals are parked with their reason; a batch that fails for any other
reason is retried message by message through the ordinary DeliveryHandler (retry ladder,
parking); while the database is away the batch is held, not burned through the retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from contracts.envelope import Envelope
from contracts.topology import ParkReason
from orchestrator.engine import Incoming, OperatorRefused, UnknownSaga, WrongWorkflow
from orchestrator.store.step import BatchResult, SagaStore, StepResult, UnexpectedMessage
from sagaline.db import is_database_outage
from sagaline.faults import crash_point
from sagaline.messaging.delivery import DeliveryHandler
from sagaline.messaging.errors import PermanentMessageError, error_summary
from sagaline.messaging.parsing import parse_body

log = logging.getLogger("sagaline.intake")

TRACE_HEADERS = ("traceparent", "tracestate")

REFUSALS: dict[type[Exception], ParkReason] = {
    UnexpectedMessage: ParkReason.UNEXPECTED_TYPE,
    UnknownSaga: ParkReason.UNKNOWN_SAGA,
    WrongWorkflow: ParkReason.WRONG_WORKFLOW,
    OperatorRefused: ParkReason.UNEXPECTED_TYPE,
}


def park_reason(refusal: Exception) -> ParkReason:
    for kind, reason in REFUSALS.items():
        if isinstance(refusal, kind):
            return reason
    return ParkReason.UNEXPECTED_TYPE


def trace_headers(delivery: AbstractIncomingMessage) -> dict[str, str]:
    headers = delivery.headers or {}
    return {k: str(headers[k]) for k in TRACE_HEADERS if k in headers}


class BatchIntake:
    def __init__(
        self,
        store: SagaStore,
        handler: DeliveryHandler,
        *,
        batch_size: int,
        batch_wait: float,
        workers: int,
        observe: Callable[[StepResult], None],
        outage_backoff: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        self.store = store
        self.handler = handler
        """Parks refusals, and handles a failed batch's messages one by one."""
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.workers = workers
        self.observe = observe
        self.outage_backoff = outage_backoff
        self._pending: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None

    async def start(self, queue: AbstractQueue) -> None:
        self._queue = queue
        self._tasks = [
            asyncio.create_task(self._work(), name=f"intake-{i}") for i in range(self.workers)
        ]
        self._consumer_tag = await queue.consume(self._pending.put)

    async def stop(self, grace: float) -> None:
        """Stop taking deliveries, finish the batches in hand, give the rest back."""
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        self.handler.stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), timeout=grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self.process(batch)
            except Exception as exc:  # never let one batch kill the intake
                log.error("batch failed", extra={"error": error_summary(exc), "size": len(batch)})
            finally:
                for _ in batch:
                    self._pending.task_done()

    async def _collect(self) -> list[AbstractIncomingMessage]:
        batch = [await self._pending.get()]
        deadline = asyncio.get_running_loop().time() + self.batch_wait
        while len(batch) < self.batch_size:
            timeout = deadline - asyncio.get_running_loop().time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._pending.get(), timeout))
            except TimeoutError:
                break
        return batch

    async def process(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        parsed: list[tuple[AbstractIncomingMessage, Envelope[Any]]] = []
        for delivery in deliveries:
            try:
                envelope = parse_body(
                    delivery.body, delivery.content_type, self.handler.max_body_bytes
                )
            except PermanentMessageError as exc:
                await self.handler.park(delivery, exc.reason, exc.summary)
                continue
            parsed.append((delivery, envelope))
        if not parsed:
            return
        results = await self._apply(parsed)
        if results is None:
            # Not a refusal and not an outage: find the culprit by handling each message
            # on its own, with the ordinary retry ladder.
            for delivery, _ in parsed:
                await self.handler(delivery)
            return
        for (delivery, envelope), result in zip(parsed, results, strict=True):
            if isinstance(result, StepResult):
                crash_point("orchestrator.after_commit_before_ack")
                self.observe(result)
                await delivery.ack()
            else:
                await self.handler.park(
                    delivery, park_reason(result), error_summary(result), envelope
                )

    async def _apply(
        self, parsed: list[tuple[AbstractIncomingMessage, Envelope[Any]]]
    ) -> list[BatchResult] | None:
        incomings = [Incoming.from_envelope(envelope) for _, envelope in parsed]
        headers = [trace_headers(delivery) for delivery, _ in parsed]
        delay = self.outage_backoff[0]
        while True:
            try:
                return await self.store.handle_batch(incomings, trace_headers=headers)
            except Exception as exc:
                if is_database_outage(exc) and not self.handler.stopping.is_set():
                    # Hold the batch: the database is away, and retrying through the queues
                    # would only burn every message's attempts.
                    log.warning("database unavailable; holding batch", extra={"retry_in": delay})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.outage_backoff[1])
                    continue
                log.warning(
                    "batch step failed; handling its messages one by one",
                    extra={"error": error_summary(exc), "size": len(parsed)},
                )
                return None
