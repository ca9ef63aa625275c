"""Broker helpers of the benchmark: fast confirmed publishing, queue depth, bare queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from contracts.envelope import Envelope
from contracts.topology import Topology
from sagaline.messaging.publish import envelope_message


async def connect(url: str) -> AbstractConnection:
    return await aio_pika.connect(url, client_properties={"connection_name": "sagaline-bench"})


async def confirm_channel(connection: AbstractConnection) -> AbstractChannel:
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


def server_version(connection: AbstractConnection) -> str | None:
    """The broker's version from the connection handshake (server properties)."""
    transport = getattr(connection, "transport", None)
    amqp = getattr(transport, "connection", None)
    props: Any = getattr(amqp, "server_properties", None) or {}
    value = props.get("version")
    if isinstance(value, bytes):
        return value.decode()
    return str(value) if value is not None else None


async def publish_window(
    exchange: AbstractExchange,
    messages: Iterable[tuple[str, aio_pika.Message]],
    *,
    window: int = 256,
    mandatory: bool = True,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Publish (routing key, message) pairs, awaiting confirms `window` at a time."""
    sent = 0
    pending: list[Any] = []
    for routing_key, message in messages:
        pending.append(exchange.publish(message, routing_key=routing_key, mandatory=mandatory))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            sent += len(pending)
            pending = []
            if progress is not None:
                progress(sent)
    if pending:
        await asyncio.gather(*pending)
        sent += len(pending)
    return sent


async def publish_paced(
    exchange: AbstractExchange,
    messages: Iterable[tuple[str, aio_pika.Message]],
    rate: float,
    *,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Publish (routing key, message) pairs at `rate` per second, confirms awaited in the
    background (a slow confirm does not hold the next publish back); returns the seconds the
    offering took."""
    pending: list[asyncio.Task[Any]] = []
    started = time.monotonic()
    for i, (routing_key, message) in enumerate(messages):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(
            asyncio.create_task(exchange.publish(message, routing_key=routing_key, mandatory=True))
        )
        if progress is not None and i % 50 == 0:
            progress(i)
    offered = time.monotonic() - started
    await asyncio.gather(*pending)
    return offered


async def publish_envelopes(
    channel: AbstractChannel,
    exchange_name: str,
    envelopes: Iterable[Envelope[Any]],
    progress: Callable[[int], None] | None = None,
) -> int:
    exchange = await channel.get_exchange(exchange_name, ensure=False)
    return await publish_window(
        exchange, ((e.type, envelope_message(e)) for e in envelopes), progress=progress
    )


async def queue_depth(connection: AbstractConnection, name: str) -> int:
    """Ready messages in a queue (a passive declare on a throwaway channel)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def declare_work_like(channel: AbstractChannel, topology: Topology, consumer: str) -> str:
    """A queue declared with the same arguments as sagaline's work queues (quorum, limits)."""
    from sagaline.messaging.declare import declare_exchanges

    await declare_exchanges(channel, topology)  # the dead-letter target must exist
    name = topology.work_queue(consumer)
    await channel.declare_queue(
        name, durable=True, arguments=topology.work_queue_arguments(consumer)
    )
    return name
