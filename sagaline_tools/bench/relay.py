"""The batched relay loop (the broker-only ceiling the bench compares against): one shape for both.

Consume with a prefetch window; gather up to `batch` deliveries or until `max_wait` has passed
since the first; publish what they map to (persistent, publisher confirms awaited together);
then ack the whole batch with one `multiple` ack. The bare baseline maps each message to a
copy of itself; the stub worker maps each command to its success reply.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

Route = tuple[AbstractExchange, str, aio_pika.Message]
"""Where one output goes: exchange, routing key, message."""
Mapper = Callable[[AbstractIncomingMessage], Route | None]


@dataclass
class RelayStats:
    relayed: int = 0
    batches: int = 0
    skipped: int = 0
    first_at: float | None = None
    last_at: float | None = None

    @property
    def rate(self) -> float | None:
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return None
        return self.relayed / (self.last_at - self.first_at)


def enqueue(
    inbox: asyncio.Queue[AbstractIncomingMessage], arrived: dict[int, float] | None = None
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    """A consumer callback feeding `inbox` (noting each delivery's arrival time in `arrived`).

    It must be a coroutine function: aio-pika wraps a plain callable in a shim that formats a
    deprecation warning with its repr on every delivery, i.e. the repr of the whole queue.
    """
    if arrived is not None:
        return _timed(inbox, arrived)

    async def on_message(message: AbstractIncomingMessage) -> None:
        inbox.put_nowait(message)

    return on_message


def _timed(
    inbox: asyncio.Queue[AbstractIncomingMessage], arrived: dict[int, float]
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    async def on_message(message: AbstractIncomingMessage) -> None:
        arrived[id(message)] = time.monotonic()
        inbox.put_nowait(message)

    return on_message


@dataclass
class Timings:
    """Per relayed message: ms from its arrival until its batch was taken ("wait"), and from
    then until its copy was confirmed ("confirm": mapping, publishing, the broker's confirm)."""

    arrived: dict[int, float] = field(default_factory=dict)
    stages: list[dict[str, float]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    """Per entry of `stages`, when that message arrived (monotonic seconds)."""

    def record(
        self, items: Sequence[AbstractIncomingMessage], taken: float, relayed: Sequence[bool]
    ) -> None:
        """Stages of the items that were relayed (`relayed` per item); the others are only
        forgotten, as the orchestrator's events that caused no command are not timed."""
        confirmed = time.monotonic()
        for item, copied in zip(items, relayed, strict=True):
            at = self.arrived.pop(id(item), taken)
            if copied:
                wait, confirm = (taken - at) * 1000, (confirmed - taken) * 1000
                self.stages.append({"wait": wait, "confirm": confirm})
                self.arrivals.append(at)


async def next_batch(
    inbox: asyncio.Queue[AbstractIncomingMessage], batch: int, max_wait: float
) -> list[AbstractIncomingMessage]:
    """Block for one delivery, then take more until `batch` or `max_wait` after the first."""
    first = await inbox.get()
    items = [first]
    deadline = time.monotonic() + max_wait
    while len(items) < batch:
        try:
            items.append(inbox.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            items.append(await asyncio.wait_for(inbox.get(), remaining))
        except TimeoutError:
            break
    return items


async def publish_all(routes: Sequence[Route]) -> None:
    # Frames leave in call order on one channel; only the confirms are awaited together.
    await asyncio.gather(
        *(exchange.publish(message, routing_key=key) for exchange, key, message in routes)
    )


async def run_relay(
    inbox: asyncio.Queue[AbstractIncomingMessage],
    mapper: Mapper,
    *,
    batch: int,
    max_wait: float,
    stats: RelayStats,
    stop_after: int | None = None,
    on_batch: Callable[[RelayStats], Awaitable[None] | None] | None = None,
    timings: Timings | None = None,
) -> RelayStats:
    """Relay until `stop_after` messages were acked (forever when None)."""
    while stop_after is None or stats.relayed < stop_after:
        items = await next_batch(inbox, batch, max_wait)
        taken = time.monotonic()
        if stats.first_at is None:
            stats.first_at = taken
        mapped = [mapper(item) for item in items]
        routes = [route for route in mapped if route is not None]
        stats.skipped += len(items) - len(routes)
        await publish_all(routes)
        if timings is not None:
            timings.record(items, taken, [route is not None for route in mapped])
        await items[-1].ack(multiple=True)
        stats.relayed += len(items)
        stats.batches += 1
        stats.last_at = time.monotonic()
        if on_batch is not None:
            result = on_batch(stats)
            if result is not None:
                await result
    return stats
