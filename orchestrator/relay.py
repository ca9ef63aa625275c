"""The outbox relay: publish committed outbox rows with publisher confirms, then mark them sent.

Woken by LISTEN/NOTIFY (delivered at commit) with a polling fallback. Several relays may run:
rows are claimed with FOR UPDATE SKIP LOCKED, so each row is published by one relay at a time.
A crash after publishing and before marking re-publishes the row with the same message id;
consumers' inboxes absorb the duplicate. For the same reason a mark sent as a statement of its
own is committed without waiting for its WAL flush: a mark lost in a database crash only means
one more duplicate.

The intake does not wait for a relay round: right after a batch of steps commits it hands the
batch's outbox rows, as it wrote them, to `dispatch`, which publishes them from memory. Once
confirmed they are marked sent by message id, by the next batch's write (no statement, round
trip or transaction of their own; `orchestrator.dispatch_marks`), or by a statement when no
batch follows within 50 ms. The batch wrote them with a dispatch lease (`dispatch_until`,
SagaStore.dispatch_lease): until it runs out the loop leaves them to the dispatch, so there is
nothing to claim or lock, and a row is still published by one party at a time. Rows the
dispatch could not publish are released to the loop, which it wakes. Rows whose writer died
before marking them wait out their lease, unless a redelivered duplicate asks for a sweep or the
writer's restart sweeps them (its relay's first round): then they may go out twice, which the
consumers' inboxes absorb. A sweep never takes rows this process confirmed and has not marked yet.

The relay publishes on a channel of its own. A broker error on it (an exchange deleted under
it, a broker restart) closes only that channel, never the intake's or the delivery handler's;
the relay reopens it on its next round. A row whose exchange does not exist stays unpublished
(and is logged) without holding back rows for other exchanges: exchanges are checked on a
throwaway channel before the first publish to them, and missing ones are left out of the claim
until a later check finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, cast

import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.dispatch_marks import Mark, PendingMarks
from orchestrator.store.plan import OutboxMessage
from orchestrator.store.saga_store import NOTIFY_CHANNEL, Clock, driver_connection, utcnow
from sagaline.background import BackgroundLoop
from sagaline.faults import crash_point
from sagaline.messaging.errors import error_summary
from sagaline.messaging.publish import amqp_properties
from sagaline.messaging.stages import mark

log = logging.getLogger("sagaline.relay")

_COLUMNS = "id, message_id, saga_id, exchange, routing_key, message_type, body, headers, created_at"

# The loop's claim. A row under a live dispatch lease is its writer's to publish (`dispatch`);
# a sweep ($3) takes those too. This process's own dispatches in flight ($4) are never taken.
CLAIM_NEXT = f"""
SELECT {_COLUMNS} FROM saga.outbox
WHERE published_at IS NULL AND NOT exchange = ANY($2::text[])
    AND NOT message_id = ANY($4::uuid[])
    AND ($3 OR dispatch_until IS NULL OR dispatch_until < now())
ORDER BY id LIMIT $1
FOR UPDATE SKIP LOCKED
"""

MARK_SENT = "UPDATE saga.outbox SET published_at = $2 WHERE id = ANY($1::bigint[])"
"""The loop's mark, as tests/integration/test_plans.py checks its plan; sent by
`mark_sent_and_commit`."""

# By message id alone: with `published_at IS NULL` beside it, a generic plan made on an empty
# outbox may read the partial index of unpublished rows whole (both cost the same to the
# planner there). A row the loop published meanwhile (its lease ran out) keeps its first time.
MARK_DISPATCHED = """
UPDATE saga.outbox SET published_at = coalesce(published_at, $2)
WHERE message_id = ANY($1::uuid[])
"""
"""The dispatch's mark, as test_plans checks it; sent by `mark_dispatched`."""

RELEASE_LEASES = "UPDATE saga.outbox SET dispatch_until = NULL WHERE message_id = ANY($1::uuid[])"
"""A dispatch that could not publish its rows hands them to the loop at once; sent by
`release_leases` (a plan kept from an empty table would read the whole outbox)."""


def mark_sent_and_commit(ids: Sequence[int], at: datetime) -> str:
    """MARK_SENT with its values written in, then COMMIT: one round trip after the confirms
    instead of three (each an event-loop turn for the batch's worker). Simple-query protocol,
    so only our own values go in: the rows' bigint ids and our clock's time.

    Losing the mark in a crash re-publishes (consumers dedupe), so the commit does not wait
    for its WAL flush: set here, not at BEGIN, because the setting is read at COMMIT."""
    id_list = ",".join(str(int(i)) for i in ids)
    update = MARK_SENT.replace("$2", _timestamp(at)).replace("$1", f"'{{{id_list}}}'")
    return f"SET LOCAL synchronous_commit TO off; {update}; COMMIT"


def mark_dispatched(message_ids: Sequence[uuid.UUID], at: datetime) -> str:
    """MARK_DISPATCHED in its own transaction, in one round trip, with the same reasoning as
    `mark_sent_and_commit` (only our own values: uuid objects' text and our clock's time)."""
    update = MARK_DISPATCHED.strip().replace("$2", _timestamp(at))
    update = update.replace("$1::uuid[]", _uuid_array(message_ids))
    return f"BEGIN; SET LOCAL synchronous_commit TO off; {update}; COMMIT"


def release_leases(message_ids: Sequence[uuid.UUID]) -> str:
    return RELEASE_LEASES.replace("$1::uuid[]", _uuid_array(message_ids))


def _timestamp(at: datetime) -> str:
    return f"'{at.isoformat()}'::timestamptz"


def _uuid_array(message_ids: Sequence[uuid.UUID]) -> str:
    """Rebuilt from each uuid's bytes: only a real uuid.UUID gets into the statement's text."""
    listed = ",".join(str(uuid.UUID(bytes=m.bytes)) for m in message_ids)
    return f"'{{{listed}}}'::uuid[]"


@contextlib.asynccontextmanager
async def _claiming(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """BEGIN for a claim; the body commits (with its mark), else it is rolled back here. A
    connection whose rollback fails is closed, never handed back mid-transaction."""
    await conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        await _roll_back(conn)
        raise
    await _roll_back(conn)


async def _roll_back(conn: asyncpg.Connection) -> None:
    if conn.is_closed() or not conn.is_in_transaction():
        return
    try:
        await conn.execute("ROLLBACK")
    except Exception:
        conn.terminate()  # the pool replaces a closed connection at its next checkout


class OutboxRelay(BackgroundLoop):
    name = "outbox-relay"

    missing_recheck_seconds = 10.0
    """How often an exchange found missing is looked for again (and its rows logged again)."""

    def __init__(
        self,
        engine: AsyncEngine,
        connection: AbstractConnection,
        *,
        commands_exchange: str,
        user_id: str | None = None,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        clock: Clock = utcnow,
        on_published: Callable[[int], None] | None = None,
        listener_connect_args: dict[str, Any] | None = None,
        dispatch_lease_seconds: float = 5.0,
    ) -> None:
        super().__init__(poll_seconds)
        self.engine = engine
        self.connection = connection
        self.commands_exchange = commands_exchange
        self.user_id = user_id
        """Our broker user, set on every message: workers that take commands only from the
        orchestrator's user check it (RabbitMQ refuses a user_id that is not the sender's)."""
        self.batch_size = batch_size
        self.clock = clock
        self.on_published = on_published
        self.listener_connect_args = listener_connect_args or {}
        self.published = 0
        self._listener: asyncpg.Connection | None = None
        self._channel: AbstractChannel | None = None
        self._opening = asyncio.Lock()
        """The loop and the intake's dispatches share one channel: open it once."""
        self._exchanges: set[str] = set()
        """Exchanges found to exist since the channel was opened."""
        self._missing: dict[str, float] = {}
        """Exchange name -> monotonic time it was last found missing."""
        self.dispatch_lease_seconds = dispatch_lease_seconds
        """The lease the store gives dispatched rows (SagaStore.dispatch_lease)."""
        self._in_flight: set[uuid.UUID] = set()
        """Message ids this process is dispatching now: the loop never takes them."""
        self._sweeping = False
        """The next round publishes leased rows too (`sweep`, and every new listener)."""
        self.marks = PendingMarks(self._mark_dispatched)
        """Confirmed dispatches not yet marked sent: the store's next write marks them."""

    async def stop(self) -> None:
        await super().stop()
        await self.marks.close()
        await self._close_listener()
        await self._close_channel()

    async def run_once(self) -> bool:
        await self._ensure_listener()
        sweeping, self._sweeping = self._sweeping, False
        try:
            full = await self.publish_batch(sweeping=sweeping) >= self.batch_size
        except BaseException:
            self._sweeping |= sweeping  # the next round (after the backoff) sweeps instead
            raise
        if full and sweeping:
            self._sweeping = True  # the sweep goes on in the next round
        return full

    def sweep(self) -> None:
        """Wake for a round that publishes leased rows too: their writer may be gone (a
        replica that died between its commit and its dispatch), or may never have known its
        commit went through (a connection lost at COMMIT)."""
        self._sweeping = True
        self.wake()

    async def on_error(self) -> None:
        await self._close_listener()
        await self._close_channel()

    @property
    def missing_exchanges(self) -> set[str]:
        return set(self._missing)

    async def publish_batch(self, *, sweeping: bool = False) -> int:
        """Publish up to batch_size unpublished rows (leased ones too when `sweeping`);
        returns how many were confirmed."""
        self._forget_missing_due_for_recheck()
        while True:
            held_before = len(self._missing)
            confirmed = await self._claim_and_publish(sweeping)
            # A claim of only held rows found a new missing exchange: claim again without it.
            if confirmed is not None or len(self._missing) == held_before:
                break
        return self._count(confirmed)

    async def dispatch(self, messages: Sequence[OutboxMessage]) -> int:
        """Publish a just-committed batch's outbox rows from memory, then mark them sent;
        returns how many were confirmed. The batch leased the rows to us, so nobody else
        claims them meanwhile and no claim or lock is needed. Rows not published are released
        to the loop, which is woken."""
        if not messages:
            return 0
        message_ids = [message.message_id for message in messages]
        self._in_flight.update(message_ids)
        try:
            confirmed = await self._publish_leased(messages)
        except Exception as exc:  # the rows are safe in the outbox: the loop retries them
            log.warning("outbox dispatch failed", extra={"error": error_summary(exc)})
            confirmed = []
        finally:
            self._in_flight.difference_update(message_ids)
        count = self._count(confirmed)
        if count < len(messages):
            self.wake()
        return count

    async def _publish_leased(self, messages: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        try:
            held = self._missing  # the loop holds these rows until their exchange appears
            routable = await self._routable([m for m in messages if m.exchange not in held])
            mark("claimed")
            confirmed = await self._publish(routable) if routable else []
            mark("confirmed")
            crash_point("orchestrator.after_publish_before_mark")
            if confirmed:
                self.marks.add([message.message_id for message in confirmed], self.clock())
        except BaseException:
            await self._release(messages)
            raise
        sent = {message.message_id for message in confirmed}
        unsent = [message for message in messages if message.message_id not in sent]
        if unsent:
            await self._release(unsent)
        return confirmed

    async def _release(self, messages: Sequence[OutboxMessage]) -> None:
        """Hand the rows to the loop now, or (the database away) once their lease ran out."""
        try:
            await self._execute(release_leases([message.message_id for message in messages]))
        except Exception as exc:
            log.warning("outbox lease release failed", extra={"error": error_summary(exc)})
            # Nothing else would wake the loop for them before its poll.
            asyncio.get_running_loop().call_later(self.dispatch_lease_seconds + 0.5, self.wake)

    async def _mark_dispatched(self, marks: Sequence[Mark]) -> None:
        """The pending marks no batch's write took, in a statement of their own."""
        await self._execute(mark_dispatched([m for m, _ in marks], max(at for _, at in marks)))

    async def _execute(self, statement: str) -> None:
        """A statement with its values written in (simple-query protocol, planned per call)."""
        async with self.engine.connect() as sa_conn:
            conn = await driver_connection(sa_conn)
            await conn.execute(statement)

    def _count(self, confirmed: Sequence[OutboxMessage] | None) -> int:
        count = len(confirmed or ())
        self.published += count
        if self.on_published is not None and count:
            self.on_published(count)
        return count

    async def _claim_and_publish(self, sweeping: bool) -> list[OutboxMessage] | None:
        """The confirmed rows; None when every claimed row's exchange was missing."""
        missing = sorted(self._missing)
        async with self.engine.connect() as sa_conn:
            conn = await driver_connection(sa_conn)
            async with _claiming(conn):
                mine = self._in_flight | self.marks.pending()
                claimed = await conn.fetch(
                    CLAIM_NEXT, self.batch_size, missing, sweeping, list(mine)
                )
                if not claimed:
                    return []
                row_ids = {row["message_id"]: row["id"] for row in claimed}
                rows = await self._routable([_outbox_message(row) for row in claimed])
                if not rows:
                    return None
                mark("claimed")
                confirmed = await self._publish(rows)
                mark("confirmed")
                crash_point("orchestrator.after_publish_before_mark")
                if confirmed:
                    ids = [row_ids[message.message_id] for message in confirmed]
                    await conn.execute(mark_sent_and_commit(ids, self.clock()))
        return confirmed

    async def _routable(self, rows: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        """The rows whose exchange exists; the others are logged and left unpublished."""
        await self._publish_channel()
        exchanges = self._exchanges
        unknown = {row.exchange for row in rows} - exchanges
        if unknown:
            for name in sorted(unknown):
                if await self._exchange_exists(name):
                    exchanges.add(name)
                else:
                    self._missing[name] = time.monotonic()
                    log.error(
                        "outbox rows held: their exchange does not exist",
                        extra={
                            "exchange": name,
                            "rows": sum(1 for row in rows if row.exchange == name),
                        },
                    )
        return [row for row in rows if row.exchange in exchanges]

    async def _exchange_exists(self, name: str) -> bool:
        if not name:
            return True  # the default exchange always exists and cannot be declared
        # A passive declare of a missing exchange closes its channel: use a throwaway one.
        probe = await self.connection.channel(publisher_confirms=False)
        try:
            await probe.declare_exchange(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(Exception):
                await probe.close()
        return True

    def _forget_missing_due_for_recheck(self) -> None:
        now = time.monotonic()
        for name, since in list(self._missing.items()):
            if now - since >= self.missing_recheck_seconds:
                del self._missing[name]

    async def _publish_channel(self) -> AbstractChannel:
        async with self._opening:
            if self._channel is None or self._channel.is_closed:
                # An exchange deleted under the old channel closed it: look again.
                self._exchanges = set()
                self._channel = await self.connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            return self._channel

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        self._exchanges = set()
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _publish(self, rows: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        # aio-pika's Exchange.publish holds the channel's lock until its frames are written
        # and drained, so the publishes of a batch leave one event-loop turn (or more) apart:
        # on a busy loop, 10 confirmed publishes took 15 ms that way against 6.7 ms queued at
        # once (`wait=False`: frames still leave in call order; each confirm is awaited).
        underlay = await (await self._publish_channel()).get_underlay_channel()
        channel = cast(aiormq.Channel, underlay)  # `wait` is the concrete channel's

        async def one(row: OutboxMessage) -> None:
            properties = amqp_properties(
                message_id=str(row.message_id),
                correlation_id=str(row.saga_id),
                message_type=row.message_type,
                headers=dict(row.headers),
                user_id=self.user_id,
            )
            # Commands must reach a worker queue (returned = misconfiguration, keep the row);
            # domain events go to whoever subscribes, possibly nobody.
            await channel.basic_publish(
                row.body,
                exchange=row.exchange,
                routing_key=row.routing_key,
                properties=properties,
                mandatory=row.exchange == self.commands_exchange,
                wait=False,
            )

        # Frames go out in call order on one channel; only the confirms are awaited together.
        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        confirmed: list[OutboxMessage] = []
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
                confirmed.append(row)
        if len(confirmed) < len(rows) and not confirmed:
            raise RuntimeError("no outbox row could be published")
        return confirmed

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        url = make_url(self.engine.url).set(drivername="postgresql")
        self._listener = await asyncpg.connect(
            url.render_as_string(hide_password=False), **self.listener_connect_args
        )
        await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake())
        # NOTIFYs sent while the listener is gone are lost: when it drops, wake up, reconnect
        # (with the loop's backoff while the database is away) and sweep what was missed.
        self._listener.add_termination_listener(lambda *_: self.wake())
        # A new listener means a start, or a database that went away. Either way leased rows
        # may have no one left to publish them: this process's previous run died before its
        # marks, or the database lost marks committed without their WAL flush (restart,
        # failover). Sweep them now rather than after their lease and a poll.
        self._sweeping = True

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None


def _outbox_message(row: asyncpg.Record) -> OutboxMessage:
    return OutboxMessage(
        row["message_id"],
        row["saga_id"],
        row["exchange"],
        row["routing_key"],
        row["message_type"],
        bytes(row["body"]),
        dict(row["headers"] or {}),
        row["created_at"],
    )
