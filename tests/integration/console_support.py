"""Helpers for the console's integration tests: a private namespace with parked messages."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika

from contracts.topology import (
    H_ERROR,
    H_ORIGINAL_QUEUE,
    H_REASON,
    H_REPLAY_COUNT,
)
from sagaline.messaging.declare import declare_consumer
from sagaline.messaging.parking import ParkingQueues
from sagaline.settings import Settings
from tests.conftest import delete_namespace


@contextlib.asynccontextmanager
async def private_namespace(settings: Settings) -> AsyncIterator[Settings]:
    own = settings.model_copy(update={"namespace": f"{settings.namespace}-{uuid.uuid4().hex[:6]}"})
    try:
        yield own
    finally:
        await delete_namespace(own)
        connection = await aio_pika.connect(own.amqp_url)
        try:
            channel = await connection.channel()
            await channel.queue_delete(f"{own.namespace}.console.parked-feed")
        finally:
            await connection.close()


async def declare(settings: Settings, consumer: str = "payments") -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        await declare_consumer(await connection.channel(), settings.topology, consumer, [])
    finally:
        await connection.close()


async def park(
    settings: Settings,
    count: int,
    *,
    consumer: str = "payments",
    reason: str = "retries-exhausted",
    error: str = "InjectedFault: order {n} failed",
    replays: int = 0,
    ids: list[str] | None = None,
    saga_id: uuid.UUID | None = None,
    message_type: str = "ProcessPayment",
) -> list[str]:
    """Publish `count` parked copies through the parking exchange, as a consumer parks them."""
    topology = settings.topology
    ids = ids or [str(uuid.uuid4()) for _ in range(count)]
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.parking_exchange)
        for n, message_id in enumerate(ids):
            headers: dict[str, Any] = {
                H_REASON: reason,
                H_ERROR: error.format(n=n),
                H_ORIGINAL_QUEUE: topology.work_queue(consumer),
                "x-sagaline-attempt": 3,
            }
            if replays:
                headers[H_REPLAY_COUNT] = replays
            await exchange.publish(
                aio_pika.Message(
                    b'{"secret": "payload"}',
                    message_id=message_id,
                    correlation_id=str(saga_id or uuid.uuid4()),
                    type=message_type,
                    headers=headers,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=topology.work_queue(consumer),
            )
    finally:
        await connection.close()
    return ids


async def depth(settings: Settings, queue: str) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def drain(settings: Settings, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(settings.amqp_url)
    taken = []
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    finally:
        await connection.close()
    return taken


@contextlib.asynccontextmanager
async def parking_queues(settings: Settings) -> AsyncIterator[ParkingQueues]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        yield ParkingQueues(
            connection, settings.topology, ["orchestrator", "payments"],
            user_id=settings.broker_user,
        )  # fmt: skip
    finally:
        await connection.close()
