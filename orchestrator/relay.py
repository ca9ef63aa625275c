"""The outbox relay: publish committed outbox rows with publisher confirms, then mark them sent.

Woken by LISTEN/NOTIFY (delivered at commit) with a polling fallback. Several relays may run:
rows are claimed with FOR UPDATE SKIP LOCKED, so each row is published by one relay at a time.
A crash after publishing and before marking re-publishes the row with the same message id;
consumers' inboxes absorb the duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.step import NOTIFY_CHANNEL, Clock, utcnow
from orchestrator.store.tables import outbox
from sagaline.background import BackgroundLoop
from sagaline.faults import crash_point
from sagaline.messaging.errors import error_summary
from sagaline.messaging.publish import amqp_message

log = logging.getLogger("sagaline.relay")


class OutboxRelay(BackgroundLoop):
    name = "outbox-relay"

    def __init__(
        self,
        engine: AsyncEngine,
        channel: AbstractChannel,
        *,
        commands_exchange: str,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        clock: Clock = utcnow,
        on_published: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(poll_seconds)
        self.engine = engine
        self.channel = channel
        self.commands_exchange = commands_exchange
        self.batch_size = batch_size
        self.clock = clock
        self.on_published = on_published
        self.published = 0
        self._listener: asyncpg.Connection | None = None

    async def stop(self) -> None:
        await super().stop()
        await self._close_listener()

    async def run_once(self) -> bool:
        await self._ensure_listener()
        return await self.publish_batch() >= self.batch_size

    async def on_error(self) -> None:
        await self._close_listener()

    async def publish_batch(self) -> int:
        """Publish up to batch_size unpublished rows; returns how many were confirmed."""
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(
                        outbox.c.id,
                        outbox.c.message_id,
                        outbox.c.saga_id,
                        outbox.c.exchange,
                        outbox.c.routing_key,
                        outbox.c.message_type,
                        outbox.c.body,
                        outbox.c.headers,
                    )
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            confirmed = await self._publish(rows)
            crash_point("orchestrator.after_publish_before_mark")
            if confirmed:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(confirmed))
                    .values(published_at=self.clock())
                )
        self.published += len(confirmed)
        if self.on_published is not None:
            self.on_published(len(confirmed))
        return len(confirmed)

    async def _publish(self, rows: Sequence[Any]) -> list[int]:
        exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        for name in {row.exchange for row in rows}:
            exchanges[name] = await self.channel.get_exchange(name, ensure=False)

        async def one(row: Any) -> None:
            message = amqp_message(
                bytes(row.body),
                message_id=str(row.message_id),
                correlation_id=str(row.saga_id),
                message_type=row.message_type,
                headers=dict(row.headers or {}),
            )
            # Commands must reach a worker queue (returned = misconfiguration, keep the row);
            # domain events go to whoever subscribes, possibly nobody.
            await exchanges[row.exchange].publish(
                message,
                routing_key=row.routing_key,
                mandatory=row.exchange == self.commands_exchange,
            )

        # Frames go out in call order on one channel; only the confirms are awaited together.
        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        confirmed = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "outbox publish failed",
                    extra={
                        "message_id": str(row.message_id),
                        "message_type": row.message_type,
                        "error": error_summary(result),
                    },
                )
            else:
                confirmed.append(row.id)
        if len(confirmed) < len(rows) and not confirmed:
            raise RuntimeError("no outbox row could be published")
        return confirmed

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        url = make_url(self.engine.url).set(drivername="postgresql")
        self._listener = await asyncpg.connect(url.render_as_string(hide_password=False))
        await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake())

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
