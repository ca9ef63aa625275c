"""Declare sagaline's exchanges and one consumer's queues, from contracts.topology.

Every process declares what it needs at start-up (declaring is idempotent). FastStream
subscribers then attach to the queue passively, so arguments are set in exactly one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, ExchangeType
from aiormq.exceptions import ChannelNotFoundEntity

from contracts.behaviour import EXCHANGE_TYPES
from contracts.topology import Topology

log = logging.getLogger("sagaline.declare")

FIRST_PAUSE = 0.5
LONGEST_PAUSE = 5.0
"""Seconds between declarations while a queue's home node is away (doubling from the first)."""


@asynccontextmanager
async def declaring(connection: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    """A channel to declare on, closed afterwards.

    Not a channel the process keeps: aio-pika's robust channel declares again, at every
    reconnection, whatever was declared on it, and on a cluster a classic queue (parking)
    whose node is down refuses that (`home node ... of durable queue ... not_found`), which
    fails the whole reconnection, again and again until that node is back. What is declared
    is durable; declaring it once at start-up is enough."""
    channel = await connection.channel()
    try:
        yield channel
    finally:
        await channel.close()


def home_node_away(exc: BaseException) -> bool:
    """RabbitMQ's refusal to declare a classic durable queue whose home node it cannot reach:
    `NOT_FOUND - home node '...' of durable queue '...' in vhost '/' is down or inaccessible`.
    On a cluster it answers so while that node is down, and for a moment while a queue that
    another process declared at the same time through another node is still being created."""
    return isinstance(exc, ChannelNotFoundEntity) and "home node" in str(exc)


async def declare_at_startup(
    connection: AbstractConnection,
    declare: Callable[[AbstractChannel], Awaitable[object]],
    *,
    within: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run `declare` on a fresh declaring channel; while a queue's home node is away, declare
    again (the refusal closed the channel) with a doubling pause, for up to `within` seconds.

    Without this a process started while a node is down (or racing another process's first
    declaration on another node) exits, and its restart policy turns that into a crash loop.
    Any other refusal, or one that lasts past `within`, is raised: the process does not start.
    """
    deadline = clock() + within
    pause = FIRST_PAUSE
    while True:
        try:
            async with declaring(connection) as channel:
                await declare(channel)
            return
        except ChannelNotFoundEntity as exc:
            if not home_node_away(exc) or clock() + pause > deadline:
                raise
            log.warning(
                "a queue's home node is down or inaccessible; declaring again",
                # The broker's own text names the node and the queue, nothing of any message.
                extra={"broker_reply": str(exc)[:300], "retry_in_seconds": pause},
            )
        await sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


async def declare_exchanges(channel: AbstractChannel, topology: Topology) -> None:
    """The three exchanges, of the kinds the published contract states (contracts.behaviour)."""
    names = {
        "events": topology.events_exchange,
        "commands": topology.commands_exchange,
        "parking": topology.parking_exchange,
    }
    for role, name in names.items():
        await channel.declare_exchange(name, ExchangeType(EXCHANGE_TYPES[role]), durable=True)


async def declare_consumer(
    channel: AbstractChannel,
    topology: Topology,
    consumer: str,
    bindings: Iterable[tuple[str, str]],
) -> aio_pika.abc.AbstractQueue:
    """Declare a consumer's work, retry and parking queues; bind the work queue.

    `bindings` are (exchange, routing key) pairs; routing keys are message type names.
    """
    await declare_exchanges(channel, topology)
    work_name = topology.work_queue(consumer)
    work = await channel.declare_queue(
        work_name, durable=True, arguments=topology.work_queue_arguments(consumer)
    )
    for exchange, routing_key in bindings:
        await work.bind(exchange, routing_key)
    for delay_ms in topology.retry_delays_ms:
        await channel.declare_queue(
            topology.retry_queue(consumer, delay_ms),
            durable=True,
            arguments=topology.retry_queue_arguments(consumer, delay_ms),
        )
    parking = await channel.declare_queue(
        topology.parking_queue(consumer),
        durable=True,
        arguments=topology.parking_queue_arguments(),
    )
    await parking.bind(topology.parking_exchange, work_name)
    return work


async def delete_consumer(channel: AbstractChannel, topology: Topology, consumer: str) -> None:
    """Remove a consumer's queues (tests, teardown); quorum queues need if_unused=False."""
    names = [
        topology.work_queue(consumer),
        topology.parking_queue(consumer),
        *(topology.retry_queue(consumer, d) for d in topology.retry_delays_ms),
    ]
    for name in names:
        await channel.queue_delete(name, if_unused=False, if_empty=False)


async def delete_exchanges(channel: AbstractChannel, topology: Topology) -> None:
    for name in (topology.events_exchange, topology.commands_exchange, topology.parking_exchange):
        await channel.exchange_delete(name, if_unused=False)
