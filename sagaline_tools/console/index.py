"""The parked-message index: parking queues made queryable without taking messages out of them.

Why an index, and why this one. A page of the dead-letter view must load in under a second
with 100,000 messages parked; reading a parking queue means taking every message off it and
letting it return (ParkingQueues.peek), which costs seconds per 10,000 and hides the messages
from everyone else meanwhile. ServiceControl answers the same question by *moving* its error
queue into its own store, and replays from there; sagaline keeps the broker as the only home of
a parked message instead, so the CLI, the orchestrator's parking metrics and the replay
semantics (a confirmed copy to the original queue, then the ack of the parked one) stay exactly
as they are, and a console that is down loses nothing.

How it is kept:
- **Feed.** Every copy parked anywhere passes through the parking exchange (ours with the
  work queue as routing key, the broker's dead-lettering likewise). One more queue bound to
  that exchange, `<ns>.console.parked-feed`, receives a copy of each; the console consumes it
  and upserts one row per parked copy (queue, key, replay count) in console.parked, then acks.
  The feed is bounded (drop-head past FEED_MAX_LENGTH) so a console that never runs cannot
  fill the broker; what it dropped is found by the reconciler.
- **Departures.** Whatever leaves a parking queue through sagaline (console or CLI replay and
  purge, replay jobs) removes its row in the same breath (`forget`).
- **Reconciler.** Every RECONCILE_SECONDS the index's count per queue is compared with the
  broker's depth (one passive declare). A difference that persists while the feed is drained
  (a purge from the management UI, copies parked before the feed existed, a dropped feed
  message) triggers one pass over that queue: rows of copies it did not see are deleted when
  they are missing from two passes in a row (a message someone held unacknowledged during one
  pass is not dropped), copies it saw are upserted.

The index is for finding and showing. Replays and purges chosen on the index still take the
message from the queue by its key and replay count; one the index lists but the queue no
longer holds is reported as gone, never invented.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from sqlalchemy import and_, delete, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.topology import Topology
from sagaline.background import BackgroundLoop
from sagaline.messaging.parking import ParkedMessage, ParkingQueues, describe
from sagaline_tools.console.keys import error_pattern, fingerprint, key_of, saga_id_of
from sagaline_tools.console.tables import parked, replay_jobs

log = logging.getLogger("sagaline.console.index")

FEED_MAX_LENGTH = 500_000
BODY_LIMIT = 65_536
"""Bytes of a parked body kept in the index for display (the full body stays in the queue)."""
RECONCILE_SECONDS = 60.0
INGEST_BATCH = 500
_HEADER_TEXT = 1000


def feed_queue(topology: Topology) -> str:
    return f"{topology.namespace}.console.parked-feed"


def feed_arguments() -> dict[str, Any]:
    return {"x-queue-type": "classic", "x-max-length": FEED_MAX_LENGTH, "x-overflow": "drop-head"}


async def declare_feed(
    channel: AbstractChannel, topology: Topology, consumers: list[str]
) -> AbstractQueue:
    """The feed queue and one binding per consumer (its work queue is the parking route).

    The parking exchange is the processes' to declare (the console has no right to): until
    one of them has run, binding fails and the ingest retries with backoff."""
    queue = await channel.declare_queue(
        feed_queue(topology), durable=True, arguments=feed_arguments()
    )
    for consumer in consumers:
        await queue.bind(topology.parking_exchange, topology.work_queue(consumer))
    return queue


def plain_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Headers as JSON: bytes as text, times as ISO-8601, long values cut."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")[:_HEADER_TEXT]
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, str):
            return value[:_HEADER_TEXT]
        if value is None or isinstance(value, bool | int | float):
            return value
        return str(value)[:_HEADER_TEXT]

    return {str(k): plain(v) for k, v in headers.items()}


def row_of(
    queue: str, message: AbstractIncomingMessage, parked_message: ParkedMessage, now: datetime
) -> dict[str, Any]:
    p = parked_message
    return {
        "queue": queue,
        "message_key": key_of(message, p),
        "replays": p.replays,
        "copies": 1,
        "message_id": (p.message_id or "")[:200] or None,
        "correlation_id": (p.correlation_id or "")[:200] or None,
        "saga_id": saga_id_of(p.correlation_id),
        "message_type": (p.message_type or "")[:200] or None,
        "reason": p.reason[:64],
        "fingerprint": fingerprint(p.reason, p.error),
        "error_pattern": error_pattern(p.reason, p.error),
        "error": p.error,
        "original_queue": p.original_queue,
        "attempts": p.attempts,
        "first_failed_at": p.first_failed_at,
        "last_failed_at": p.last_failed_at,
        "parked_at": now,
        "size": p.size,
        "headers": plain_headers(message.headers or {}),
        "body": message.body[:BODY_LIMIT],
        "body_truncated": len(message.body) > BODY_LIMIT,
        "missing_since": None,
    }


def _merged(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per copy key (one INSERT ... ON CONFLICT may not touch a row twice)."""
    by_key: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["queue"], row["message_key"], row["replays"])
        if key in by_key:
            by_key[key]["copies"] += row["copies"]
        else:
            by_key[key] = dict(row)
    return list(by_key.values())


async def upsert(conn: AsyncConnection, rows: list[dict[str, Any]], *, add: bool) -> None:
    """Insert copies; for a copy already indexed, `add` counts another copy (a fresh feed
    message), else the count is set (a reconciling pass saw exactly that many)."""
    if not rows:
        return
    stmt = pg_insert(parked).values(_merged(rows))
    copies = parked.c.copies + stmt.excluded.copies if add else stmt.excluded.copies
    await conn.execute(
        stmt.on_conflict_do_update(
            constraint="uq_parked_copy", set_={"copies": copies, "missing_since": None}
        )
    )


async def forget(conn: AsyncConnection, queue: str, copies: list[tuple[str, int]]) -> None:
    """One copy each of these (key, replay count) left the queue: count it down, drop at zero."""
    if not copies:
        return
    keys = [tuple_(parked.c.message_key, parked.c.replays) == (k, r) for k, r in copies]
    matching = and_(parked.c.queue == queue, or_(*keys))
    await conn.execute(update(parked).where(matching).values(copies=parked.c.copies - 1))
    await conn.execute(delete(parked).where(matching, parked.c.copies <= 0))


class FeedIngest(BackgroundLoop):
    """Consumes the feed queue into the index, a batch per transaction, acked after commit."""

    name = "parked-ingest"

    def __init__(
        self,
        engine: AsyncEngine,
        connection: AbstractConnection,
        topology: Topology,
        consumers: list[str],
        *,
        clock: Any = None,
        idle_seconds: float = 0.2,
    ) -> None:
        super().__init__(idle_seconds)
        self.engine = engine
        self.connection = connection
        self.topology = topology
        self.consumers = consumers
        self.clock = clock or (lambda: datetime.now(UTC))
        self.ingested = 0
        self._channel: AbstractChannel | None = None
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._parking_of = {topology.work_queue(c): topology.parking_queue(c) for c in consumers}

    async def run_once(self) -> bool:
        if self._channel is None or self._channel.is_closed:
            await self._subscribe()
        batch: list[AbstractIncomingMessage] = []
        with contextlib.suppress(TimeoutError):
            batch.append(await asyncio.wait_for(self._buffer.get(), self.interval))
        while batch and len(batch) < INGEST_BATCH and not self._buffer.empty():
            batch.append(self._buffer.get_nowait())
        if not batch:
            return False
        await self.ingest(batch)
        return len(batch) >= INGEST_BATCH

    async def _subscribe(self) -> None:
        self._channel = await self.connection.channel()
        await self._channel.set_qos(prefetch_count=INGEST_BATCH * 2)
        queue = await declare_feed(self._channel, self.topology, self.consumers)
        self._buffer = asyncio.Queue()
        await queue.consume(self._buffer.put)

    async def ingest(self, batch: list[AbstractIncomingMessage]) -> None:
        now = self.clock()
        fresh: list[dict[str, Any]] = []
        again: list[dict[str, Any]] = []
        for message in batch:
            queue = self._parking_of.get(message.routing_key or "")
            if queue is None:
                continue  # not a parking route of ours (a stray binding): nothing to index
            row = row_of(queue, message, describe(message, 0), now)
            # A redelivery (we died after committing, before the ack) is not a second copy.
            (again if message.redelivered else fresh).append(row)
        async with self.engine.begin() as conn:
            await upsert(conn, fresh, add=True)
            for row in again:
                row["copies"] = 1
            await upsert(conn, again, add=False)
        await batch[-1].ack(multiple=True)
        self.ingested += len(batch)

    async def on_error(self) -> None:
        await self.close()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            # Unacked deliveries in the buffer return to the feed; they are ingested again.
            await channel.close()


@dataclass
class _Mismatch:
    depth: int
    indexed: int


class Reconciler(BackgroundLoop):
    """Repairs the index where it and the broker disagree (see the module docstring)."""

    name = "parked-reconciler"

    def __init__(
        self,
        engine: AsyncEngine,
        parking: ParkingQueues,
        *,
        interval: float = RECONCILE_SECONDS,
        clock: Any = None,
    ) -> None:
        super().__init__(interval)
        self.engine = engine
        self.parking = parking
        self.clock = clock or (lambda: datetime.now(UTC))
        self._suspect: dict[str, _Mismatch] = {}
        self.passes = 0

    async def run_once(self) -> bool:
        await self.check()
        return False

    async def check(self) -> None:
        if await self.parking.depth(feed_queue(self.parking.topology)):
            return  # the feed is not drained yet: counts are still moving
        indexed = await self._indexed()
        busy = await self._queues_with_running_jobs()
        for consumer in self.parking.consumers:
            queue = self.parking.topology.parking_queue(consumer)
            now = _Mismatch(await self.parking.depth(queue), indexed.get(queue, 0))
            if now.depth == now.indexed or queue in busy:
                self._suspect.pop(queue, None)
                continue
            if self._suspect.get(queue) == now:
                # The same difference twice in a row: not a count caught mid-move.
                await self.reconcile(queue)
                self._suspect.pop(queue, None)
            else:
                self._suspect[queue] = now

    async def reconcile(self, queue: str) -> None:
        started = self.clock()
        rows: list[dict[str, Any]] = []
        async with self.parking.walking(queue) as walk:
            while (taken := await walk.next()) is not None:
                message, parked_message = taken
                rows.append(row_of(queue, message, parked_message, started))
        merged = _merged(rows)
        async with self.engine.begin() as conn:
            for start in range(0, len(merged), INGEST_BATCH):
                await upsert(conn, merged[start : start + INGEST_BATCH], add=False)
            seen = {(r["message_key"], r["replays"]) for r in merged}
            indexed = (
                await conn.execute(
                    select(
                        parked.c.id, parked.c.message_key, parked.c.replays, parked.c.missing_since
                    ).where(parked.c.queue == queue)
                )
            ).all()
            unseen = [r for r in indexed if (r.message_key, r.replays) not in seen]
            twice = [r.id for r in unseen if r.missing_since is not None]
            once = [r.id for r in unseen if r.missing_since is None]
            if twice:
                await conn.execute(delete(parked).where(parked.c.id.in_(twice)))
            if once:
                await conn.execute(
                    update(parked).where(parked.c.id.in_(once)).values(missing_since=started)
                )
        self.passes += 1
        log.info(
            "parked index reconciled",
            extra={"queue": queue, "seen": len(rows), "dropped": len(twice), "missing": len(once)},
        )

    async def _indexed(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(parked.c.queue, func.sum(parked.c.copies)).group_by(parked.c.queue)
                )
            ).all()
        return {str(q): int(n or 0) for q, n in rows}

    async def _queues_with_running_jobs(self) -> set[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(replay_jobs.c.queue).where(replay_jobs.c.status == "running").distinct()
            )
            return {str(q) for (q,) in rows}
