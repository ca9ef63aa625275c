"""Parking (dead-letter) queue operations: list, show, replay and purge parked messages.

Reading is non-destructive: messages are taken without acknowledgement and returned to the
queue, in order, when the channel closes. Replay republishes a copy to the original queue with
the same message id and a replay counter, and acknowledges the parked copy only after the
broker confirmed the copy.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from contracts.topology import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILED_AT,
    H_LAST_FAILED_AT,
    H_ORIGINAL_QUEUE,
    H_REASON,
    H_REPLAY_COUNT,
    ParkReason,
    Topology,
)
from sagaline.messaging.delivery import BROKER_HEADERS, bounded_count, republished

SCAN_LIMIT = 10_000
"""Most messages one command reads from a parking queue (protects the operator's terminal)."""

ENVELOPE_PARSE_LIMIT = 65_536
"""Largest body whose JSON envelope is read for ids: envelopes are small, and a scan of
SCAN_LIMIT messages must not parse gigabytes. Larger bodies show only their AMQP properties."""

_ID_CHARS = 200

# x-death reasons spelled as our own reasons; others ("expired", "maxlen") show as they come.
_BROKER_REASONS = {
    "delivery_limit": ParkReason.DELIVERY_LIMIT.value,
    "rejected": ParkReason.REJECTED.value,
}


class DlqError(Exception):
    """An operator-facing error (unknown queue, broker refused); its text is one clear line."""


@dataclass(frozen=True)
class ParkedMessage:
    position: int
    message_id: str | None
    correlation_id: str | None
    message_type: str | None
    reason: str
    original_queue: str | None
    attempts: int
    replays: int
    first_failed_at: str | None
    last_failed_at: str | None
    error: str | None
    size: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueSummary:
    queue: str
    depth: int
    reasons: dict[str, int]
    scanned: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    """Which parked messages an operation applies to; no criterion at all selects nothing."""

    ids: frozenset[str] = frozenset()
    reason: str | None = None
    everything: bool = False

    def __call__(self, message: ParkedMessage) -> bool:
        if self.everything:
            return True
        if self.ids and message.message_id in self.ids:
            return True
        return self.reason is not None and message.reason == self.reason

    @property
    def empty(self) -> bool:
        return not (self.everything or self.ids or self.reason)


def describe(message: AbstractIncomingMessage, position: int) -> ParkedMessage:
    headers = message.headers or {}
    death = _latest_death(headers)
    envelope = _envelope_ids(message.body)
    original = _parked_from(headers, death)
    return ParkedMessage(
        position=position,
        message_id=message.message_id or envelope.get("message_id"),
        correlation_id=message.correlation_id or envelope.get("correlation_id"),
        message_type=message.type or envelope.get("type"),
        reason=_reason(headers, death),
        original_queue=str(original) if original else None,
        attempts=(
            bounded_count(headers, H_ATTEMPT)
            if H_ATTEMPT in headers
            else bounded_count(death, "count")
        ),
        replays=bounded_count(headers, H_REPLAY_COUNT),
        first_failed_at=_text(headers.get(H_FIRST_FAILED_AT) or death.get("time")),
        last_failed_at=_text(headers.get(H_LAST_FAILED_AT) or death.get("time")),
        error=_text(headers.get(H_ERROR)),
        size=len(message.body),
    )


def _latest_death(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The broker's record of the dead-lettering that parked the message, or {} if it did not.

    RabbitMQ keeps the most recent dead-lettering first: that is the one that parked it (an
    older entry may be the retry queue's TTL expiry that brought it back to the work queue).
    """
    deaths = headers.get("x-death") or []
    latest: Any = deaths[0] if isinstance(deaths, list) and deaths else {}
    return latest if isinstance(latest, dict) else {}


def _reason(headers: Mapping[str, Any], death: Mapping[str, Any]) -> str:
    # Our own parked copies drop x-death, so one that carries it was dead-lettered by the
    # broker, and the broker's reason is the truth: an x-sagaline-reason header on it came with
    # the original message and may have been forged by its publisher.
    if "reason" in death:
        broker_reason = str(death["reason"])
        return _BROKER_REASONS.get(broker_reason, broker_reason)
    return str(headers.get(H_REASON, "unknown"))


def _parked_from(headers: Mapping[str, Any], death: Mapping[str, Any]) -> Any:
    # Same distrust as _reason: where the broker took the message from is where a replay
    # belongs, not wherever a publisher's header points.
    return death.get("queue") or headers.get(H_ORIGINAL_QUEUE)


def _envelope_ids(body: bytes) -> dict[str, str]:
    """The ids and type from the JSON envelope, for publishers that set no AMQP properties.

    Parked bodies are often the reason they were parked (not JSON, not an object, huge, nested
    beyond the parser's depth), so anything unexpected yields nothing rather than an error.
    """
    if len(body) > ENVELOPE_PARSE_LIMIT:
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        field: value[:_ID_CHARS]
        for field in ("message_id", "correlation_id", "type")
        if isinstance(value := document.get(field), str) and value
    }


class ParkingQueues:
    def __init__(
        self,
        connection: AbstractConnection,
        topology: Topology,
        consumers: list[str],
        *,
        user_id: str | None = None,
    ) -> None:
        self.connection = connection
        self.topology = topology
        self.consumers = consumers
        self.user_id = user_id
        """The connection's broker user: replayed copies are sent as it (consumers that take
        messages only from listed senders see who replayed them)."""

    def resolve(self, name: str) -> str:
        """Accept a consumer name (`payments`) or a parking queue's full name."""
        known = {self.topology.parking_queue(c): c for c in self.consumers}
        if name in known:
            return name
        candidate = self.topology.parking_queue(name)
        if candidate in known:
            return candidate
        choices = ", ".join(sorted(self.consumers))
        raise DlqError(f"unknown parking queue {name!r} (consumers: {choices})")

    async def depth(self, queue: str) -> int:
        async with self._channel() as channel:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return 0  # never declared: nothing was ever parked there
            return int(declared.declaration_result.message_count or 0)

    async def summaries(self) -> list[QueueSummary]:
        result = []
        for consumer in self.consumers:
            queue = self.topology.parking_queue(consumer)
            depth = await self.depth(queue)
            reasons: Counter[str] = Counter()
            scanned = 0
            if depth:
                for message in await self.peek(queue, SCAN_LIMIT):
                    reasons[message.reason] += 1
                    scanned += 1
            result.append(QueueSummary(queue, depth, dict(sorted(reasons.items())), scanned))
        return result

    async def peek(self, queue: str, limit: int) -> list[ParkedMessage]:
        async with self._taken(queue, limit) as taken:
            return [describe(m, i) for i, m in enumerate(taken)]

    async def replay(
        self, queue: str, selection: Selection, *, dry_run: bool
    ) -> list[ParkedMessage]:
        """Republish the selected messages to their original queues; returns what was chosen."""
        async with self._taken(queue, SCAN_LIMIT) as taken:
            chosen = [
                (message, parked)
                for message, parked in ((m, describe(m, i)) for i, m in enumerate(taken))
                if selection(parked)
            ]
            # Check every choice before sending any: a refusal must not leave a partial replay.
            for _, parked in chosen:
                if parked.original_queue is None:
                    raise DlqError(f"message {parked.message_id} names no original queue")
            if not dry_run:
                await self._republish(taken.channel, chosen)
        return [parked for _, parked in chosen]

    async def _republish(
        self,
        channel: AbstractChannel,
        chosen: list[tuple[AbstractIncomingMessage, ParkedMessage]],
    ) -> None:
        for done, (message, parked) in enumerate(chosen):
            assert parked.original_queue is not None
            try:
                await channel.default_exchange.publish(
                    _replay_copy(message, parked.replays + 1, self.user_id),
                    routing_key=parked.original_queue,
                    mandatory=True,
                )
            except aio_pika.exceptions.DeliveryError:
                # Returned (the queue is gone) or nacked: this one and the rest stay parked.
                raise DlqError(
                    f"{parked.original_queue} did not accept message {parked.message_id}; "
                    f"{done} of {len(chosen)} replayed, the rest stay parked"
                ) from None
            # Only after the broker confirmed the copy: a crash in between duplicates the
            # message (the consumer's inbox absorbs it) and never loses it.
            await message.ack()

    @contextlib.asynccontextmanager
    async def walking(self, queue: str) -> AsyncIterator[Walk]:
        """Go through a parking queue one message at a time (replay jobs at a rate).

        What is taken and neither replayed nor purged returns to the queue, in order, when the
        walk ends; memory stays flat however deep the queue (each message is described, then
        dropped: the broker keeps it until the channel closes).
        """
        async with self._channel() as channel:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                raise DlqError(f"parking queue {queue} does not exist on the broker") from None
            yield Walk(channel, declared, self.user_id)

    async def purge(self, queue: str, selection: Selection) -> list[ParkedMessage]:
        removed: list[ParkedMessage] = []
        async with self._taken(queue, SCAN_LIMIT) as taken:
            for position, message in enumerate(taken):
                parked = describe(message, position)
                if selection(parked):
                    await message.ack()
                    removed.append(parked)
        return removed

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    @contextlib.asynccontextmanager
    async def _taken(self, queue: str, limit: int) -> AsyncIterator[_Taken]:
        """Take up to `limit` messages unacknowledged; closing the channel returns the rest."""
        async with self._channel() as channel:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                raise DlqError(f"parking queue {queue} does not exist on the broker") from None
            taken = _Taken(channel)
            while len(taken) < limit:
                message = await declared.get(no_ack=False, fail=False)
                if message is None:
                    break
                taken.append(message)
            yield taken


class Walk:
    """One pass over a parking queue: `next()` takes the next message, `replay()` sends one back
    to its original queue, `purge()` deletes one; the rest return when the pass ends."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, user_id: str | None) -> None:
        self.channel = channel
        self.queue = queue
        self.user_id = user_id
        self.position = 0

    async def next(self) -> tuple[AbstractIncomingMessage, ParkedMessage] | None:
        message = await self.queue.get(no_ack=False, fail=False)
        if message is None:
            return None
        parked = describe(message, self.position)
        self.position += 1
        return message, parked

    async def replay(self, message: AbstractIncomingMessage, parked: ParkedMessage) -> None:
        """Republish with a confirm, then ack the parked copy (as ParkingQueues.replay does)."""
        if parked.original_queue is None:
            raise DlqError(f"message {parked.message_id} names no original queue")
        try:
            await self.channel.default_exchange.publish(
                _replay_copy(message, parked.replays + 1, self.user_id),
                routing_key=parked.original_queue,
                mandatory=True,
            )
        except aio_pika.exceptions.DeliveryError:
            raise DlqError(
                f"{parked.original_queue} did not accept message {parked.message_id}; "
                "it stays parked"
            ) from None
        await message.ack()

    async def purge(self, message: AbstractIncomingMessage) -> None:
        await message.ack()


class _Taken(list[AbstractIncomingMessage]):
    def __init__(self, channel: AbstractChannel) -> None:
        super().__init__()
        self.channel = channel


def _replay_copy(
    message: AbstractIncomingMessage, replays: int, user_id: str | None
) -> aio_pika.Message:
    headers = {k: v for k, v in (message.headers or {}).items() if k not in BROKER_HEADERS}
    # A fresh retry ladder for the replayed copy; the replay counter and first failure stay.
    headers.pop(H_ATTEMPT, None)
    headers.pop(H_REASON, None)
    headers[H_REPLAY_COUNT] = replays
    return republished(message, headers, user_id)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)[:500]
