"""Helpers to run a worker in-process against a real broker and talk to it (tests, demos).

Retry, parking and TTLs need the real broker (FastStream's TestRabbitBroker emulates none of
them), so these helpers use real queues: a private reply queue bound to the events exchange,
publisher-confirmed command publishes, and a poll of a parking queue for one message id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from faststream.asgi import AsgiFastStream
from faststream.rabbit import RabbitBroker, RabbitExchange
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.faults import FaultSwitch
from consumers.runtime import WorkerProcess, WorkerSpec
from consumers.settings import WorkerSettings
from contracts.envelope import Envelope
from contracts.topology import H_CAUSATION_ID, ORCHESTRATOR, Topology
from sagaline.messaging.declare import declare_exchanges, delete_consumer, delete_exchanges
from sagaline.messaging.parsing import parse_body
from sagaline.messaging.publish import envelope_message, publish_envelope


def offline_worker(
    spec: WorkerSpec, engine: AsyncEngine, config: WorkerSettings | None = None
) -> WorkerProcess:
    """A worker's transaction path without a broker: `handle_batch` claims, handles and stores
    replies in the database (it never publishes)."""
    config = config if config is not None else WorkerSettings(fail_commands=frozenset())
    handled = Counter(
        "sagaline_commands_handled",
        "unused offline",
        ["command", "reply", "duplicate"],
        registry=CollectorRegistry(),
    )
    return WorkerProcess(
        spec,
        spec.handlers(config),
        engine,
        RabbitBroker(),  # never connected
        RabbitExchange("offline"),
        FaultSwitch(frozenset(config.fail_commands)),
        handled,
    )


@asynccontextmanager
async def running(app: AsgiFastStream, within: float = 30.0) -> AsyncIterator[AsgiFastStream]:
    """Start the app (hooks, queue declarations, consumer) and stop it on exit."""
    async with asyncio.timeout(within):
        await app.start()
    try:
        yield app
    finally:
        async with asyncio.timeout(within):
            await app.stop()


async def send_command(
    channel: AbstractChannel, topology: Topology, envelope: Envelope[Any], **headers: Any
) -> None:
    """Publish to the commands exchange with a confirm (raises if no worker queue is bound)."""
    await publish_envelope(channel, topology.commands_exchange, envelope, headers=headers or None)


async def send_to_queue(channel: AbstractChannel, queue: str, envelope: Envelope[Any]) -> None:
    """Publish straight into one queue (a misrouted message, or an operator's replay)."""
    await channel.default_exchange.publish(
        envelope_message(envelope), routing_key=queue, mandatory=True
    )


@dataclass
class Reply:
    envelope: Envelope[Any]
    message: AbstractIncomingMessage


@dataclass
class ReplyListener:
    """A private, auto-deleted queue on the events exchange that collects replies by command."""

    channel: AbstractChannel
    topology: Topology
    routing_keys: Iterable[str] = ("#",)
    max_body_bytes: int = 256 * 1024
    _replies: list[Reply] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _queue: AbstractQueue | None = None
    _tag: str | None = None

    async def __aenter__(self) -> ReplyListener:
        await declare_exchanges(self.channel, self.topology)
        self._queue = await self.channel.declare_queue(
            f"{self.topology.namespace}.test-replies.{uuid.uuid4().hex[:8]}",
            exclusive=True,
            auto_delete=True,
        )
        for key in self.routing_keys:
            await self._queue.bind(self.topology.events_exchange, key)
        self._tag = await self._queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._queue is not None:
            if self._tag is not None:
                await self._queue.cancel(self._tag)
            await self._queue.delete(if_unused=False, if_empty=False)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        envelope = parse_body(message.body, message.content_type, self.max_body_bytes)
        async with self._arrived:
            self._replies.append(Reply(envelope, message))
            self._arrived.notify_all()

    def replies_to(self, command_id: uuid.UUID) -> list[Reply]:
        return [
            r for r in self._replies if r.message.headers.get(H_CAUSATION_ID) == str(command_id)
        ]

    async def wait(
        self, command_id: uuid.UUID, count: int = 1, within: float = 10.0
    ) -> list[Reply]:
        """The first `count` replies whose causation id is this command's id."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.replies_to(command_id)) >= count)
            return self.replies_to(command_id)[:count]


async def wait_parked(
    channel: AbstractChannel, queue_name: str, message_id: uuid.UUID, within: float = 10.0
) -> AbstractIncomingMessage:
    """Take the parked copy of one message; other parked messages are left in the queue."""
    queue = await channel.declare_queue(queue_name, passive=True)
    async with asyncio.timeout(within):
        while True:
            held: list[AbstractIncomingMessage] = []
            found: AbstractIncomingMessage | None = None
            # Hold what we read unacknowledged so that get() moves past it, then give it back.
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                if found is None and message.message_id == str(message_id):
                    found = message
                else:
                    held.append(message)
            for other in held:
                await other.nack(requeue=True)
            if found is not None:
                await found.ack()
                return found
            await asyncio.sleep(0.05)


async def delete_namespace(
    channel: AbstractChannel, topology: Topology, consumers: Iterable[str]
) -> None:
    """Remove the queues of these consumers and the namespace's exchanges.

    The orchestrator's queues go too: every worker declares them for its replies.
    """
    for consumer in dict.fromkeys([*consumers, ORCHESTRATOR]):
        await delete_consumer(channel, topology, consumer)
    await delete_exchanges(channel, topology)
