"""The shape every worker shares: a name, a Postgres schema, and one handler per command type.

A handler decides and applies the command's effect on the worker's own tables, on the connection
it is given, and returns the reply event. Business outcomes (declined, out of stock) are reply
events; an exception means a transient failure and sends the delivery through retry and parking.

Per command the worker claims the inbox row (or finds the reply stored the first time), runs the
handler and stores its reply, all in one transaction; after commit it publishes the reply with a
publisher confirm, and only then acks. Commands arrive in batches (consumers.batch) that share
the transaction; a failed batch is handled again one command at a time by `WorkerProcess` through
the DeliveryHandler. A crash anywhere before the ack redelivers the command, which returns the
stored reply: the effect happens once, the reply may be published more than once (the
orchestrator's inbox absorbs that).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import DeliveryError, PublishError
from faststream.rabbit import RabbitBroker, RabbitExchange
from prometheus_client import Counter
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumers.faults import FaultSwitch
from consumers.inbox import StoredReply, claim_batch, reply_envelope, store_replies
from consumers.settings import WorkerSettings
from contracts.base import Command, ReplyEvent
from contracts.behaviour import CONTENT_TYPE
from contracts.envelope import Envelope
from contracts.topology import (
    H_CAUSATION_ID,
    H_SCHEMA_VERSION,
    ParkReason,
    Topology,
)
from sagaline.faults import crash_point
from sagaline.messaging.delivery import attempt_header
from sagaline.messaging.errors import PermanentMessageError, ReportableError

log = logging.getLogger("consumers.runtime")

Handler = Callable[[AsyncConnection, Envelope[Any]], Awaitable[ReplyEvent]]


@dataclass(frozen=True)
class BatchHandler:
    """Handles many commands of one type in a few set-based statements (a worker's hot path)
    instead of a few statements per command, with the outcome of handling them one by one in
    the order given.

    The runtime only ever passes commands with distinct `key`s (the order id), so that what is
    decided for one command cannot depend on another's effect, except through shared rows (an
    sku's stock) which `run` reads once and then decides on in order. `run` returns one reply
    per command, in order.
    """

    key: Callable[[Envelope[Any]], str]
    run: Callable[[AsyncConnection, Sequence[Envelope[Any]]], Awaitable[Sequence[ReplyEvent]]]


HandlerMap = Mapping[type[Command], Handler | BatchHandler]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is; `build_worker` turns it into a runnable FastStream app."""

    name: str
    """Consumer name: the work queue is `<namespace>.<name>`."""
    schema: str
    """The worker's own Postgres schema (its tables and its inbox live there)."""
    metadata: MetaData
    inbox: Table
    commands: tuple[type[Command], ...]
    """The command types bound to the work queue (contracts.routes.WORKER_COMMANDS)."""
    make_handlers: Callable[[WorkerSettings], HandlerMap]
    description: str = ""

    def bindings(self, topology: Topology) -> Sequence[tuple[str, str]]:
        return [(topology.commands_exchange, command.message_type) for command in self.commands]

    def handlers(self, config: WorkerSettings) -> HandlerMap:
        handlers = self.make_handlers(config)
        if set(handlers) != set(self.commands):
            # A bound command without a handler would be parked on every delivery.
            raise ValueError(f"worker {self.name}: handlers do not match its bound commands")
        return handlers


@dataclass(frozen=True)
class WorkerProcess:
    """The Process a worker's DeliveryHandler calls for each parsed envelope."""

    spec: WorkerSpec
    handlers: HandlerMap
    engine: AsyncEngine
    broker: RabbitBroker
    events: RabbitExchange
    faults: FaultSwitch
    handled: Counter
    """sagaline_commands_handled_total: by command, reply and whether it was a duplicate."""
    sender: str | None = None
    """Our broker user, set as the replies' user_id (the orchestrator may check it)."""

    async def __call__(self, envelope: Envelope[Any], delivery: AbstractIncomingMessage) -> None:
        refusal = self.refusal(envelope)
        if refusal is not None:
            raise refusal
        ((reply, duplicate),) = await self.handle_batch([(envelope, attempt_of(delivery))])
        crash_point("worker.after_commit_before_reply")
        await publish_reply(self.broker, self.events, reply, self.sender)
        crash_point("worker.before_ack")
        self.record(envelope, reply, duplicate)

    def record(self, envelope: Envelope[Any], reply: StoredReply, duplicate: bool) -> None:
        """Count and log a command whose reply the broker confirmed (ids and types only).

        Every command is counted; a line per command is DEBUG (at thousands a second it would
        cost more than the command), while a duplicate answered from its stored reply is INFO.
        """
        self.handled.labels(envelope.type, reply.header.type, str(duplicate).lower()).inc()
        level = logging.INFO if duplicate else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "command handled",
            extra={
                "message_id": str(envelope.message_id),
                "correlation_id": str(envelope.correlation_id),
                "message_type": envelope.type,
                "reply_type": reply.header.type,
                "duplicate": duplicate,
            },
        )

    async def handle_batch(
        self, commands: Sequence[tuple[Envelope[Any], int]]
    ) -> list[tuple[StoredReply, bool]]:
        """Apply (envelope, attempt) commands in one transaction, in order: (reply, duplicate) each.

        Any failure rolls back the whole batch; the caller handles its commands one by one. A
        command twice in one batch is handled once; its second copy gets the first one's reply.
        """
        inbox = self.spec.inbox
        async with self.engine.begin() as conn:
            known = await claim_batch(conn, inbox, [envelope for envelope, _ in commands])
            runs = _Runs(self.handlers, conn)
            for envelope, attempt in commands:
                if envelope.message_id in known or runs.has(envelope.message_id):
                    continue
                self.faults.check(envelope, attempt)
                await runs.add(envelope)
            fresh = await runs.finish()
            await store_replies(conn, inbox, fresh)
        results: list[tuple[StoredReply, bool]] = []
        answered: set[uuid.UUID] = set()
        for envelope, _ in commands:
            message_id = envelope.message_id
            if message_id in known:
                results.append((known[message_id], True))
            else:  # a second copy in the same batch gets the first one's reply
                results.append((fresh[message_id], message_id in answered))
                answered.add(message_id)
        return results

    def refusal(self, envelope: Envelope[Any]) -> PermanentMessageError | None:
        """Why this worker will never handle the command (it is parked), or None."""
        if type(envelope.payload) in self.handlers:
            return None
        return PermanentMessageError(
            ParkReason.UNEXPECTED_TYPE, f"worker {self.spec.name} does not handle {envelope.type}"
        )


class _Runs:
    """Runs the handlers of a batch's new commands in order, grouping consecutive commands of
    one type with a BatchHandler and distinct keys into one call."""

    def __init__(self, handlers: HandlerMap, conn: AsyncConnection) -> None:
        self.handlers = handlers
        self.conn = conn
        self.replies: dict[uuid.UUID, StoredReply] = {}
        self._handler: BatchHandler | None = None
        """The current run's handler (None: no run open)."""
        self._run: list[Envelope[Any]] = []
        self._run_keys: set[str] = set()
        self._run_ids: set[uuid.UUID] = set()

    def has(self, message_id: uuid.UUID) -> bool:
        return message_id in self.replies or message_id in self._run_ids

    async def add(self, envelope: Envelope[Any]) -> None:
        handler = self.handlers[type(envelope.payload)]
        if not isinstance(handler, BatchHandler):
            await self._flush()
            reply = await handler(self.conn, envelope)
            self.replies[envelope.message_id] = StoredReply.of(reply_envelope(envelope, reply))
            return
        key = handler.key(envelope)
        if handler is not self._handler or key in self._run_keys:
            await self._flush()
        self._handler = handler
        self._run.append(envelope)
        self._run_keys.add(key)
        self._run_ids.add(envelope.message_id)

    async def finish(self) -> dict[uuid.UUID, StoredReply]:
        await self._flush()
        return self.replies

    async def _flush(self) -> None:
        handler, run = self._handler, self._run
        if handler is None:
            return
        self._handler, self._run, self._run_keys, self._run_ids = None, [], set(), set()
        replies = await handler.run(self.conn, run)
        if len(replies) != len(run):
            raise RuntimeError(f"batch handler answered {len(replies)} of {len(run)} commands")
        for envelope, reply in zip(run, replies, strict=True):
            self.replies[envelope.message_id] = StoredReply.of(reply_envelope(envelope, reply))


class ReplyNotDelivered(ReportableError):
    """The broker did not take a reply; the command goes through retry and parking."""


async def publish_reply(
    broker: RabbitBroker, events: RabbitExchange, reply: StoredReply, sender: str | None = None
) -> None:
    """Publish through FastStream (its telemetry middleware carries the trace context on).

    The broker's channel has publisher confirms and raises on returned messages, so this returns
    only once the broker has the reply in a queue: an unroutable reply raises and is retried.
    """
    header = reply.header
    headers: dict[str, Any] = {H_SCHEMA_VERSION: header.schema_version}
    if header.causation_id is not None:
        headers[H_CAUSATION_ID] = str(header.causation_id)
    try:
        await broker.publish(
            reply.body,
            exchange=events,
            routing_key=header.type,
            persist=True,
            mandatory=True,
            content_type=CONTENT_TYPE,
            message_id=str(header.message_id),
            correlation_id=str(header.correlation_id),
            message_type=header.type,
            headers=headers,
            user_id=sender,
        )
    except DeliveryError as exc:
        # Returned (no queue bound for this reply type, e.g. no orchestrator declared yet) or
        # nacked. The reply stays stored: a retry or a replay publishes it without redoing work.
        how = "returned as unroutable" if isinstance(exc, PublishError) else "not confirmed"
        raise ReplyNotDelivered(f"reply {header.type} to {events.name} was {how}") from exc


def attempt_of(delivery: AbstractIncomingMessage) -> int:
    """1 for the first delivery; retried copies carry the number of failed attempts so far."""
    return attempt_header(delivery.headers) + 1
