"""One delivery's life: parse, process, then ack, retry with backoff, or park with a reason.

Shared by the orchestrator and every worker, so retry and parking behave the same everywhere.
Retried and parked copies are re-published with publisher confirms *before* the original is
acknowledged: a crash in between duplicates a message (the inbox absorbs it), never loses one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, DeliveryMode
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.encode import field_table

from contracts.envelope import Envelope
from contracts.topology import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILED_AT,
    H_LAST_FAILED_AT,
    H_ORIGINAL_QUEUE,
    H_REASON,
    ParkReason,
    Topology,
)
from sagaline.db import hold_through_outage, is_database_outage
from sagaline.messaging.errors import PermanentMessageError, error_summary
from sagaline.messaging.parsing import parse_body
from sagaline.messaging.senders import SenderPolicy

log = logging.getLogger("sagaline.delivery")

Process = Callable[[Envelope[Any], AbstractIncomingMessage], Awaitable[None]]

MAX_ATTEMPT = 1_000
"""Our attempt header is sender input too: larger (forged) counts read as this."""

BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
"""Broker bookkeeping headers that must not follow a message into a re-published copy."""


@dataclass
class DeliveryHandler:
    consumer: str
    topology: Topology
    channel: AbstractChannel
    """A channel with publisher confirms, used for retry and parking copies."""
    process: Process
    max_body_bytes: int
    senders: SenderPolicy = field(default_factory=SenderPolicy)
    """Whose messages this consumer takes; its own user also signs its retry and parking copies."""
    outage_backoff: tuple[float, float] = (0.5, 10.0)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def __call__(self, delivery: AbstractIncomingMessage) -> None:
        await self._guarded(delivery, self._handle(delivery))

    async def settle_failure(
        self, delivery: AbstractIncomingMessage, envelope: Envelope[Any], exc: Exception
    ) -> None:
        """Settle a delivery whose processing already failed with `exc`, without running it
        again: park a permanent refusal, requeue on a database outage, else retry or park."""
        await self._guarded(delivery, self._settle_failure(delivery, envelope, exc))

    async def _guarded(self, delivery: AbstractIncomingMessage, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:
            # Retry or parking copies could not be published (broker trouble). Give the message
            # back after a pause instead of holding it unacknowledged for the channel's life;
            # the quorum queue's delivery limit bounds how often this can happen.
            log.warning("could not settle delivery", extra={"error": error_summary(exc)})
            await asyncio.sleep(1.0)
            await _requeue(delivery)

    def parse(self, delivery: AbstractIncomingMessage) -> Envelope[Any]:
        """The delivery's envelope, from a sender allowed to send it; PermanentMessageError
        (with the parking reason) otherwise."""
        envelope = parse_body(delivery.body, delivery.content_type, self.max_body_bytes)
        refusal = self.senders.refusal(envelope.type, delivery.user_id)
        if refusal is not None:
            raise refusal
        return envelope

    async def _handle(self, delivery: AbstractIncomingMessage) -> None:
        try:
            envelope = self.parse(delivery)
        except PermanentMessageError as exc:
            await self.park(delivery, exc.reason, exc.summary)
            return
        await self._process_until_settled(envelope, delivery)

    async def _process_until_settled(
        self, envelope: Envelope[Any], delivery: AbstractIncomingMessage
    ) -> None:
        try:
            await hold_through_outage(
                lambda: self.process(envelope, delivery),
                stopping=self.stopping,
                backoff=self.outage_backoff,
                what="delivery",
                extra={"message_id": str(envelope.message_id)},
            )
        except Exception as exc:
            await self._settle_failure(delivery, envelope, exc)
        else:
            await delivery.ack()

    async def _settle_failure(
        self, delivery: AbstractIncomingMessage, envelope: Envelope[Any], exc: Exception
    ) -> None:
        if isinstance(exc, PermanentMessageError):
            await self.park(delivery, exc.reason, exc.summary, envelope)
        elif is_database_outage(exc):
            await _requeue(delivery)  # stopping: the broker gives it to the next consumer
        elif isinstance(exc, ChannelInvalidStateError):
            # Our own publishing channel is closed (a broker link lost, not yet restored): not
            # the message's fault, so no attempt is counted. Raised for `_guarded`, which gives
            # the delivery back after a pause; burning the retry ladder in the second it takes
            # to restore the channel parked commands that other replicas then answered.
            raise exc
        else:
            await self._retry_or_park(delivery, exc, envelope)

    async def _retry_or_park(
        self, delivery: AbstractIncomingMessage, exc: Exception, envelope: Envelope[Any]
    ) -> None:
        attempt = attempt_header(delivery.headers)
        summary = error_summary(exc)
        delays = self.topology.retry_delays_ms
        if attempt >= len(delays):
            log.error(
                "handler failed; retries exhausted",
                extra=_ids(envelope) | {"error": summary, "attempts": attempt + 1},
            )
            await self.park(delivery, ParkReason.RETRIES_EXHAUSTED, summary, envelope)
            return
        queue = self.topology.retry_queue(self.consumer, delays[attempt])
        log.warning(
            "handler failed; retrying",
            extra=_ids(envelope)
            | {"error": summary, "attempt": attempt + 1, "delay_ms": delays[attempt]},
        )
        headers = self._failure_headers(delivery, summary, attempt + 1)
        await self._move(delivery, headers, "", queue)

    async def park(
        self,
        delivery: AbstractIncomingMessage,
        reason: ParkReason,
        summary: str,
        envelope: Envelope[Any] | None = None,
    ) -> None:
        log.error(
            "message parked",
            extra=(_ids(envelope) if envelope else {"message_id": delivery.message_id})
            | {"reason": str(reason), "error": summary, "queue": self.consumer},
        )
        headers = self._failure_headers(delivery, summary, attempt_header(delivery.headers) + 1)
        headers[H_REASON] = str(reason)
        await self._move(
            delivery,
            headers,
            self.topology.parking_exchange,
            self.topology.work_queue(self.consumer),
        )

    async def _move(
        self,
        delivery: AbstractIncomingMessage,
        headers: dict[str, Any],
        exchange_name: str,
        routing_key: str,
    ) -> None:
        """Publish a copy (retry or parking) with a confirm, then ack the original. A copy that
        fails on a healthy channel dead-letters the original instead; a closed channel is
        broker trouble, raised for the guard to give the delivery back."""
        try:
            exchange = (
                self.channel.default_exchange
                if not exchange_name
                else await self.channel.get_exchange(exchange_name, ensure=False)
            )
            await exchange.publish(
                republished(delivery, headers, self.senders.own_user), routing_key=routing_key
            )
        except Exception as publish_error:
            if self.channel.is_closed:
                raise
            await self._dead_letter(delivery, publish_error)
            return
        await delivery.ack()

    async def _dead_letter(self, delivery: AbstractIncomingMessage, error: Exception) -> None:
        """The copy of this one message could not be published on a healthy channel: let the
        broker dead-letter the original (the work queue's dead-letter exchange is the parking
        exchange) so that it, and only it, leaves the queue; a batch it came in goes on."""
        log.error(
            "could not publish a copy of the message; the broker dead-letters it",
            extra={"message_id": delivery.message_id, "error": error_summary(error)},
        )
        await delivery.nack(requeue=False)

    def _failure_headers(
        self, delivery: AbstractIncomingMessage, summary: str, attempt: int
    ) -> dict[str, Any]:
        now = self.now().isoformat()
        headers = {
            k: v
            for k, v in (delivery.headers or {}).items()
            if k not in BROKER_HEADERS and _encodable(k, v)
        }
        headers.setdefault(H_FIRST_FAILED_AT, now)
        headers[H_LAST_FAILED_AT] = now
        headers[H_ATTEMPT] = attempt
        headers[H_ERROR] = summary
        headers[H_ORIGINAL_QUEUE] = self.topology.work_queue(self.consumer)
        return headers


def republished(
    delivery: AbstractIncomingMessage, headers: dict[str, Any], user_id: str | None
) -> aio_pika.Message:
    """A persistent copy of `delivery` with `headers` (retry, parking and replay copies), sent
    as `user_id`: the publisher's own broker user (RabbitMQ refuses any other), or None."""
    return aio_pika.Message(
        body=delivery.body,
        headers=headers,
        content_type=delivery.content_type,
        content_encoding=delivery.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=delivery.message_id,
        correlation_id=delivery.correlation_id,
        type=delivery.type,
        timestamp=delivery.timestamp,
        app_id=delivery.app_id,
        user_id=user_id,
    )


async def _requeue(delivery: AbstractIncomingMessage) -> None:
    try:
        await delivery.nack(requeue=True)
    except Exception:  # the channel is gone: the broker redelivers on its own
        log.debug("nack failed; delivery returns to the queue when the channel closes")


def attempt_header(headers: dict[str, Any] | None) -> int:
    """Failed attempts so far, from our header (see `bounded_count`)."""
    return bounded_count(headers, H_ATTEMPT)


def bounded_count(headers: dict[str, Any] | None, name: str) -> int:
    """One of our counter headers, which any sender can forge: only a plain integer counts,
    bounded to 0..MAX_ATTEMPT (a forged 2**63-1 must not overflow the next copy's header)."""
    value = (headers or {}).get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, 0), MAX_ATTEMPT)


def _encodable(name: str, value: Any) -> bool:
    """Whether a header taken from an incoming message can be sent on in a copy. Decoding is
    more lenient than encoding (pamqp reads an unsigned 64-bit integer it cannot write back)."""
    try:
        field_table({name: value})
    except Exception:
        return False
    return True


def _ids(envelope: Envelope[Any] | None) -> dict[str, Any]:
    if envelope is None:
        return {}
    return {
        "message_id": str(envelope.message_id),
        "correlation_id": str(envelope.correlation_id),
        "message_type": envelope.type,
    }
