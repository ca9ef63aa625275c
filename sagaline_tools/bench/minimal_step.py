"""The minimal step: the smallest correct batched saga step, on raw asyncpg + aio-pika.

The reference the orchestrator section is compared with (issue "Performance: within 2x of a
minimal hand-written step"). It runs the order saga of minimal_flow.py in the orchestrator
section's shape: it consumes the orchestrator's queue (the events and the stub worker's
replies), and sends the commands the stub worker answers. Like the orchestrator it collects up
to `batch` deliveries or `max_wait` (two batches in flight, each on its own connection), and per
batch it does what a transactional step cannot leave out:

1. one transaction: insert the message ids into the inbox (duplicates are skipped), read the
   sagas, decide, insert the new sagas and update the others compare-and-set on their version
   (a saga that moved meanwhile rolls the batch back; its deliveries are requeued), insert the
   commands into the outbox, commit;
2. publish the commands (persistent, mandatory, publisher confirms awaited together);
3. acknowledge the batch with one `multiple` ack (batches ack in the order they were taken);
4. mark the outbox rows published (one round trip, not waiting for its WAL flush: a lost mark
   only means a duplicate publish, which the workers' inboxes absorb).

It writes no history, no timers, no trace context, and validates nothing beyond the fields it
reads: what is left is the floor of a step's cost on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from sagaline_tools.bench.minimal_flow import FLOW, START, Event, command_body, parse_event, step
from sagaline_tools.bench.relay import enqueue, next_batch

SCHEMA = "bench_minimal"

TABLES = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.inbox (message_id uuid PRIMARY KEY);
CREATE TABLE {SCHEMA}.sagas (
    id uuid PRIMARY KEY, state text NOT NULL, version int NOT NULL, data jsonb NOT NULL);
CREATE TABLE {SCHEMA}.outbox (
    id bigserial PRIMARY KEY, message_id uuid NOT NULL, routing_key text NOT NULL,
    body bytea NOT NULL, published_at timestamptz);
CREATE INDEX outbox_unpublished ON {SCHEMA}.outbox (id) WHERE published_at IS NULL;
"""

INBOX = f"""
INSERT INTO {SCHEMA}.inbox SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING RETURNING message_id
"""

# One index probe per key whatever the planner knows (the orchestrator's reads do the same).
LOAD = f"""
SELECT s.* FROM unnest($1::uuid[]) AS k(id) CROSS JOIN LATERAL (
    SELECT id, state, version, data FROM {SCHEMA}.sagas WHERE id = k.id OFFSET 0) AS s
"""

INSERT = f"""
INSERT INTO {SCHEMA}.sagas SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::jsonb[])
ON CONFLICT DO NOTHING RETURNING id
"""

UPDATE = f"""
UPDATE {SCHEMA}.sagas AS s SET state = v.state, version = v.version
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[]) AS v(id, expected, state, version)
WHERE s.id = v.id AND s.version = v.expected
"""

OUTBOX = f"""
INSERT INTO {SCHEMA}.outbox (message_id, routing_key, body)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[]) RETURNING id
"""


def mark_sql(ids: Sequence[int]) -> str:
    """The mark as one simple-protocol round trip (ids are integers from RETURNING)."""
    listed = ",".join(str(int(i)) for i in ids)
    return (
        "BEGIN; SET LOCAL synchronous_commit TO off;"
        f" UPDATE {SCHEMA}.outbox SET published_at = now() WHERE id = ANY('{{{listed}}}');"
        " COMMIT"
    )


class Conflict(Exception):
    """A saga changed between the read and the compare-and-set (or was started meanwhile)."""


Command = tuple[uuid.UUID, uuid.UUID, str, bytes]
"""(message id, saga id, type, envelope JSON)."""


class Saga:
    __slots__ = ("data", "loaded_version", "state", "version")

    def __init__(self, state: str | None, version: int, data: dict[str, Any]) -> None:
        self.state = state
        self.version = version
        self.loaded_version = version
        self.data = data


async def apply(conn: asyncpg.Connection, events: list[Event]) -> tuple[list[Command], list[int]]:
    """One transaction for the batch: the commands it sent and their outbox row ids."""
    now = datetime.now(UTC)
    async with conn.transaction():
        fresh = {r[0] for r in await conn.fetch(INBOX, list({e.message_id for e in events}))}
        todo = []
        for event in events:
            if event.message_id in fresh:  # a second copy in the batch is a duplicate too
                fresh.discard(event.message_id)
                todo.append(event)
        sagas = await _load(conn, todo)
        new: dict[uuid.UUID, Saga] = {}
        commands: list[Command] = []
        for event in todo:
            rule = FLOW.get(event.type)
            if rule is None:
                continue
            saga = sagas.get(event.saga_id)
            if saga is None and event.type == START:
                saga = sagas[event.saga_id] = new[event.saga_id] = Saga(None, 0, event.payload)
            if saga is None or not step(rule, saga.state):
                continue  # unknown saga or an event it does not wait for: nothing to do
            saga.state = rule.moves_to
            saga.version += 1
            if rule.command is not None:
                message_id = uuid.uuid4()
                body = command_body(
                    rule,
                    saga.data,
                    message_id=message_id,
                    saga_id=event.saga_id,
                    causation_id=event.message_id,
                    now=now,
                )
                commands.append((message_id, event.saga_id, rule.command, body))
        await _write_sagas(conn, sagas, new)
        if not commands:
            return commands, []
        rows = await conn.fetch(
            OUTBOX, [c[0] for c in commands], [c[2] for c in commands], [c[3] for c in commands]
        )
    return commands, [r[0] for r in rows]


async def _load(conn: asyncpg.Connection, events: list[Event]) -> dict[uuid.UUID, Saga]:
    wanted = list({e.saga_id for e in events if e.type != START})
    if not wanted:
        return {}
    return {
        row[0]: Saga(row[1], row[2], json.loads(row[3])) for row in await conn.fetch(LOAD, wanted)
    }


async def _write_sagas(
    conn: asyncpg.Connection, sagas: dict[uuid.UUID, Saga], new: dict[uuid.UUID, Saga]
) -> None:
    if new:
        ids = list(new)
        created = await conn.fetch(
            INSERT,
            ids,
            [new[i].state for i in ids],
            [new[i].version for i in ids],
            [json.dumps(new[i].data) for i in ids],
        )
        if len(created) != len(ids):
            raise Conflict
    moved = [(i, s) for i, s in sagas.items() if i not in new and s.version != s.loaded_version]
    if moved:
        status = await conn.execute(
            UPDATE,
            [i for i, _ in moved],
            [s.loaded_version for _, s in moved],
            [s.state for _, s in moved],
            [s.version for _, s in moved],
        )
        if int(status.split()[-1]) != len(moved):
            raise Conflict


class MinimalStep:
    """The consume-transact-publish-ack loop: `workers` batches in flight, acked in order."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        commands: AbstractExchange,
        *,
        batch: int,
        max_wait: float,
        workers: int,
    ) -> None:
        self.pool = pool
        self.commands = commands
        self.batch = batch
        self.max_wait = max_wait
        self.workers = workers
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.transitions = 0
        self.samples: list[tuple[float, int]] = []
        """(monotonic time, transitions so far) after each batch."""
        self._collecting = asyncio.Lock()
        self._acked: asyncio.Future[None] | None = None
        """Settled when the batch taken last has been acked (or given back)."""

    async def run(self, expect: int) -> None:
        """Until `expect` deliveries were settled."""
        done = asyncio.Event()
        tasks = [asyncio.create_task(self._work(expect, done)) for _ in range(self.workers)]
        try:
            await done.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _work(self, expect: int, done: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._collecting:
                items = await next_batch(self.inbox, self.batch, self.max_wait)
                turn, mine = self._acked, loop.create_future()
                self._acked = mine
            try:
                settled = await self._one(items, turn)
            finally:
                if not mine.done():
                    mine.set_result(None)
            self.transitions += settled
            self.samples.append((time.monotonic(), self.transitions))
            if self.transitions >= expect:
                done.set()

    async def _one(
        self, items: list[AbstractIncomingMessage], turn: asyncio.Future[None] | None
    ) -> int:
        """Deliveries acked (0 when the batch was given back after a conflict)."""
        events, kept = [], []
        for message in items:
            try:
                events.append(parse_event(message.body))
                kept.append(message)
            except (KeyError, TypeError, ValueError):
                await message.reject()  # dead-lettered: the multiple ack skips it
        async with self.pool.acquire() as conn:
            try:
                commands, rows = await apply(conn, events)
            except Conflict:
                if turn is not None:
                    await turn
                for message in kept:
                    await message.nack(requeue=True)
                return 0
            await asyncio.gather(*(self._publish(c) for c in commands))
            if turn is not None:
                await turn
            if kept:
                await kept[-1].ack(multiple=True)
            if rows:
                await conn.execute(mark_sql(rows))
        return len(items)

    async def _publish(self, command: Command) -> None:
        message_id, saga_id, message_type, body = command
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(message_id),
            correlation_id=str(saga_id),
            type=message_type,
        )
        await self.commands.publish(message, routing_key=message_type, mandatory=True)


async def step_main(args: argparse.Namespace) -> None:
    """Report the samples once `expect` deliveries are settled, then hold the connections
    until stopped: the bench reads the CPU time of the database backends before they exit."""
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    pool = await asyncpg.create_pool(args.dsn, min_size=args.workers, max_size=args.workers)
    connection = await aio_pika.connect(args.amqp_url)
    try:
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=args.prefetch)
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await publish.get_exchange(f"{args.namespace}.commands", ensure=False)
        loop = MinimalStep(
            pool,
            exchange,
            batch=args.batch,
            max_wait=args.max_wait_ms / 1000,
            workers=args.workers,
        )
        queue = await consume.declare_queue(f"{args.namespace}.orchestrator", passive=True)
        await queue.consume(enqueue(loop.inbox))
        _report({"ready": True})
        run = asyncio.create_task(loop.run(args.expect))
        await asyncio.wait(
            {run, asyncio.create_task(stopped.wait())}, return_when="FIRST_COMPLETED"
        )
        if run.done():
            run.result()
            _report({"samples": loop.samples})
            await stopped.wait()
        else:
            run.cancel()
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
        await pool.close()


def _report(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="sagaline bench: the minimal saga step")
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--expect", type=int, required=True, help="deliveries, then exit")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args()
    import uvloop

    uvloop.run(step_main(args))


if __name__ == "__main__":
    main()
