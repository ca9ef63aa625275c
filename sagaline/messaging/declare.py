"""Declare sagaline's exchanges and one consumer's queues, from contracts.topology.

Every process declares what it needs at start-up (declaring is idempotent). FastStream
subscribers then attach to the queue passively, so arguments are set in exactly one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, ExchangeType

from contracts.behaviour import EXCHANGE_TYPES
from contracts.topology import Topology


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
