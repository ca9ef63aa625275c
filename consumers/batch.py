"""A worker's hot path: up to `batch_size` commands in one transaction, their replies' publisher
confirms awaited together, then the deliveries acknowledged.

Per command nothing changes from the one-by-one path (consumers.runtime.WorkerProcess): the inbox
row is claimed, the effect applied and the reply stored in one transaction; the reply is published
with a confirm only after the commit; the delivery is acked only after the confirm. What a batch
shares is the transaction (one commit and one fsync instead of K) and the wait for confirms.

A batch that fails for anything but a database outage (a handler's transient error, a deadlock
with another replica's batch) is rolled back as a whole and its commands are handled again one
by one through the DeliveryHandler, which gives each its own retry ladder. A reply the broker did
not take goes the same way: its stored copy is published again, or retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import propagate, trace

from consumers.inbox import StoredReply
from consumers.runtime import WorkerProcess, attempt_of, publish_reply
from contracts.envelope import Envelope
from sagaline.faults import crash_point
from sagaline.messaging.batching import apply_batch, parse_or_park, settle_one_by_one
from sagaline.messaging.delivery import DeliveryHandler

log = logging.getLogger("consumers.batch")
_tracer = trace.get_tracer("sagaline.worker")

Parsed = tuple[AbstractIncomingMessage, Envelope[Any]]


class WorkerBatch:
    """The worker's BatchProcessor (sagaline.messaging.batching)."""

    def __init__(
        self,
        worker: WorkerProcess,
        handler: DeliveryHandler,
        outage_backoff: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        self.worker = worker
        self.handler = handler
        """Parks refusals; handles a failed batch's commands one by one."""
        self.outage_backoff = outage_backoff

    async def process(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        parsed = await self._parse(deliveries)
        if not parsed:
            return
        replies = await apply_batch(
            lambda: self.worker.handle_batch([(e, attempt_of(d)) for d, e in parsed]),
            stopping=self.handler.stopping,
            backoff=self.outage_backoff,
        )
        if isinstance(replies, Exception):
            await settle_one_by_one(self.handler, parsed, replies)
            return
        for _ in replies:
            crash_point("worker.after_commit_before_reply")
        publishes = [
            self._publish(delivery, reply)
            for (delivery, _), (reply, _) in zip(parsed, replies, strict=True)
        ]
        outcomes = await asyncio.gather(*publishes, return_exceptions=True)
        for (delivery, envelope), (reply, duplicate), outcome in zip(
            parsed, replies, outcomes, strict=True
        ):
            if isinstance(outcome, BaseException):
                # The reply is stored: the one-by-one path publishes it again or retries.
                await self.handler(delivery)
                continue
            crash_point("worker.before_ack")
            self.worker.record(envelope, reply, duplicate)
            await delivery.ack()

    async def _parse(self, deliveries: Sequence[AbstractIncomingMessage]) -> list[Parsed]:
        """The batch's usable commands; the rest is parked with its reason."""
        usable: list[Parsed] = []
        for delivery, envelope in await parse_or_park(self.handler, deliveries):
            refusal = self.worker.refusal(envelope)
            if refusal is None:
                usable.append((delivery, envelope))
            else:
                await self.handler.park(delivery, refusal.reason, refusal.summary, envelope)
        return usable

    async def _publish(self, delivery: AbstractIncomingMessage, reply: StoredReply) -> None:
        # The reply continues the command's trace: a consumer span in the command's context
        # (named and tagged as OpenTelemetry's messaging conventions say), and FastStream's
        # publish span under it carries the context on in the reply's headers.
        headers = {k: str(v) for k, v in (delivery.headers or {}).items()}
        with _tracer.start_as_current_span(
            f"{delivery.type or 'command'} process",
            context=propagate.extract(headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation": "process",
                "messaging.destination.name": delivery.routing_key or "",
                "messaging.message.id": delivery.message_id or "",
                "messaging.message.conversation_id": delivery.correlation_id or "",
            },
        ):
            await publish_reply(self.worker.broker, self.worker.events, reply, self.worker.sender)
