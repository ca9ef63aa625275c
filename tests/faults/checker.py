"""The invariants every fault scenario ends with, checked against PostgreSQL and RabbitMQ.

- Every input processed once: each message the test published, every command the orchestrator
  sent and every reply a worker gave has exactly one inbox row and one history entry.
- No update lost: each saga's transitions carry versions 1..n, once each, in commit order.
- Every command's effect applied once: the worker's inbox holds one row with the stored reply,
  and the ledgers add up (payments: at most one charge per order, charged - refunded = amount
  for a completed order and 0 otherwise; inventory: on_hand + reserved conserved per sku and
  reserved = what reserved orders hold; shipping: a live shipment exactly for completed orders).
  A saga that ended compensation_failed or aborted is an operator's to resolve: its charge may
  still stand (never more than the amount), its stock stay reserved, its shipment live.
- Nothing left behind: no unpublished outbox row, no timer of a finished saga, no message in a
  work or retry queue once the processes stopped (unacknowledged deliveries return to the queue
  when a consumer's channel closes, so an empty queue means nothing was held either).
- Every saga in an expected final state; every bad message parked once with its reason, and
  nothing else parked.

Duplicate deliveries are allowed: they are counted (publishes seen by a tap queue bound to the
events and commands exchanges, and workers' "duplicate" log lines) and reported. Every copy of a
message must be the same message, though: one message id published with two different bodies
means something was decided again instead of re-sent as stored (a worker's inbox not answering).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumers.inbox import reply_message_id
from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR, Topology
from sagaline.messaging.parking import ParkingQueues
from sagaline.settings import Settings
from tests.faults.harness import eventually
from tests.faults.workload import Order, Workload

TAP = "faults-tap"
CONSUMERS = [ORCHESTRATOR, *WORKER_COMMANDS]
WORKER_OF = {c.message_type: worker for worker, cs in WORKER_COMMANDS.items() for c in cs}
UNRESOLVED = frozenset({"compensation_failed", "aborted"})
"""Final states that hand the saga to an operator: what was done may not be undone yet."""
REPORTS: list[Report] = []
"""Every scenario's report, printed in the terminal summary (tests/faults/conftest.py)."""


def tap_queue(topology: Topology) -> str:
    return f"{topology.namespace}.{TAP}"


async def declare_tap(channel: AbstractChannel, topology: Topology, quorum: bool = False) -> None:
    """A queue that receives a copy of every event and command published: classic, or a
    quorum queue on a cluster (a classic queue lives on one node; while that node is down,
    every publish routed to it is refused, and the copies it should keep are missing)."""
    from sagaline.messaging.declare import declare_exchanges

    await declare_exchanges(channel, topology)
    arguments: dict[str, Any] | None = {"x-queue-type": "quorum"} if quorum else None
    queue = await channel.declare_queue(tap_queue(topology), durable=True, arguments=arguments)
    await queue.bind(topology.events_exchange, "#")
    await queue.bind(topology.commands_exchange, "#")


@dataclass
class Report:
    scenario: str
    sagas: int = 0
    states: Counter[str] = field(default_factory=Counter)
    inputs: int = 0
    commands: int = 0
    publishes: int = 0
    duplicate_publishes: Counter[str] = field(default_factory=Counter)
    duplicate_commands_handled: int = 0
    conflicts: float | None = None
    parked: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        dups = sum(self.duplicate_publishes.values())
        by_type = ", ".join(f"{k}={v}" for k, v in sorted(self.duplicate_publishes.items()))
        parts = [
            f"{self.scenario}: {self.seconds:.1f}s",
            f"sagas={self.sagas} {dict(sorted(self.states.items()))}",
            f"inputs={self.inputs} commands={self.commands} publishes={self.publishes}",
            f"duplicate publishes={dups}" + (f" ({by_type})" if by_type else ""),
            f"duplicate commands handled={self.duplicate_commands_handled}",
        ]
        if self.conflicts is not None:
            parts.append(f"conflicts={self.conflicts:.0f}")
        if self.parked:
            parts.append(f"parked={dict(sorted(self.parked.items()))}")
        parts.extend(self.notes)
        if self.timings:
            parts.append(" ".join(f"{k}={v:.1f}s" for k, v in self.timings.items()))
        return "; ".join(parts)


# --- waiting for the end state ------------------------------------------------------------------


async def _settled(conn: AsyncConnection, ids: list[uuid.UUID]) -> tuple[int, int, int, int]:
    """(unfinished sagas, unpublished outbox rows, commands without a processed reply, total)."""
    unfinished = await conn.scalar(
        text(
            "SELECT count(*) FROM unnest(CAST(:ids AS uuid[])) AS s(id)"
            " LEFT JOIN saga.instances i ON i.id = s.id"
            " WHERE i.id IS NULL OR i.finished_at IS NULL"
        ),
        {"ids": ids},
    )
    unpublished = await conn.scalar(
        text("SELECT count(*) FROM saga.outbox WHERE saga_id = ANY(:ids) AND published_at IS NULL"),
        {"ids": ids},
    )
    commands = (
        await conn.execute(
            text(
                "SELECT message_id FROM saga.outbox WHERE saga_id = ANY(:ids)"
                " AND routing_key = ANY(:types)"
            ),
            {"ids": ids, "types": list(WORKER_OF)},
        )
    ).scalars()
    replies = [reply_message_id(c) for c in commands]
    answered = await conn.scalar(
        text("SELECT count(*) FROM saga.inbox WHERE message_id = ANY(:ids)"), {"ids": replies}
    )
    return int(unfinished or 0), int(unpublished or 0), len(replies) - int(answered or 0), len(ids)


async def wait_for_end(engine: AsyncEngine, orders: Iterable[Order], within: float) -> None:
    """Every saga finished, its outbox drained, and every command's reply processed."""
    ids = [order.saga_id for order in orders]
    last: tuple[int, int, int, int] | None = None

    async def probe() -> bool:
        nonlocal last
        async with engine.connect() as conn:
            last = await _settled(conn, ids)
        return last[:3] == (0, 0, 0)

    try:
        await eventually(probe, within=within, what="the end state", interval=0.25)
    except AssertionError as exc:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT s.id, i.state FROM unnest(CAST(:ids AS uuid[])) AS s(id)"
                        " LEFT JOIN saga.instances i ON i.id = s.id"
                        " WHERE i.id IS NULL OR i.finished_at IS NULL LIMIT 10"
                    ),
                    {"ids": ids},
                )
            ).all()
            locked = await conn.scalar(
                text(
                    "SELECT count(*) FROM saga.outbox WHERE saga_id = ANY(:ids)"
                    " AND published_at IS NULL"
                    " AND id NOT IN (SELECT id FROM saga.outbox WHERE published_at IS NULL"
                    " FOR UPDATE SKIP LOCKED)"
                ),
                {"ids": ids},
            )
            sessions = (
                await conn.execute(
                    text(
                        "SELECT application_name, state, wait_event, left(query, 60) AS query,"
                        " now() - xact_start AS open_for FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        " AND state <> 'idle'"
                    )
                )
            ).all()
        stuck = ", ".join(f"{r.id}: {r.state or 'never started'}" for r in rows)
        stuck += f"; unpublished rows locked by a transaction: {locked}; busy sessions: "
        stuck += "; ".join(
            f"{s.application_name!r} {s.state} {s.wait_event} for {s.open_for}: {s.query!r}"
            for s in sessions
        )
        raise AssertionError(
            f"{exc}: unfinished sagas, unpublished outbox rows, unanswered commands, sagas"
            f" = {last}; unfinished: {stuck}"
        ) from None


# --- the checks ---------------------------------------------------------------------------------


@dataclass
class Checker:
    settings: Settings
    engine: AsyncEngine
    workload: Workload
    report: Report
    expected_parked: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """consumer -> {AMQP message id: park reason}; every other parking queue must be empty."""
    extra_inputs: list[uuid.UUID] = field(default_factory=list)
    """Valid messages sent to the orchestrator besides the orders' own inputs (e.g. replays)."""
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.problems.append(problem)

    async def check(
        self,
        connection: AbstractRobustConnection,
        logs: Mapping[str, str] | None = None,
    ) -> Report:
        """Every check (processes must be stopped for the queue checks); raise on problems.

        The scenario's database is its own (tests/faults/conftest.py), so the outbox and timer
        checks cover the whole database, not only the workload's sagas."""
        await self.check_database(whole_database=True)
        await self.check_broker(connection)
        if logs:
            workers = set(WORKER_OF.values())
            self.report.duplicate_commands_handled = sum(
                _duplicate_handlings(log) for name, log in logs.items() if name in workers
            )
        self.report.seconds = time.monotonic() - self.report.started
        REPORTS.append(self.report)
        self.raise_problems()
        return self.report

    async def check_database(
        self, orders: list[Order] | None = None, *, whole_database: bool = False
    ) -> None:
        """The database invariants for these orders (default: all), e.g. after one phase;
        `whole_database`: also nothing unpublished and no stray timer anywhere in it."""
        orders = self.workload.orders if orders is None else orders
        self.report.sagas = max(self.report.sagas, len(orders))
        async with self.engine.connect() as conn:
            await self._database(conn, orders)
            if whole_database:
                await self._whole_database(conn)

    async def _whole_database(self, conn: AsyncConnection) -> None:
        unpublished = await conn.scalar(
            text("SELECT count(*) FROM saga.outbox WHERE published_at IS NULL")
        )
        if unpublished:
            self.fail(f"{unpublished} outbox rows in the database were never published")
        stray = await conn.scalar(
            text(
                "SELECT count(*) FROM saga.timers t JOIN saga.instances i ON i.id = t.saga_id"
                " WHERE i.finished_at IS NOT NULL"
            )
        )
        if stray:
            self.fail(f"{stray} timers left on finished sagas")

    async def check_broker(self, connection: AbstractRobustConnection) -> None:
        await self._broker(connection)

    def raise_problems(self, label: str = "") -> None:
        if not self.problems:
            return
        shown = "\n  ".join(self.problems[:30])
        more = len(self.problems) - 30
        raise AssertionError(
            f"{label}{len(self.problems)} invariant violations:\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )

    # --- database -------------------------------------------------------------------------------

    async def _database(self, conn: AsyncConnection, orders: list[Order]) -> None:
        ids = [o.saga_id for o in orders]
        rows = (
            await conn.execute(
                text(
                    "SELECT id, state, version, finished_at IS NOT NULL AS done"
                    " FROM saga.instances WHERE id = ANY(:ids)"
                ),
                {"ids": ids},
            )
        ).all()
        found = {r.id: r for r in rows}
        self.report.states = Counter()
        for order in orders:
            row = found.get(order.saga_id)
            if row is None:
                self.fail(f"saga {order.saga_id} ({order.case.kind}) does not exist")
                continue
            self.report.states[row.state] += 1
            if not row.done or row.state not in order.states:
                self.fail(
                    f"saga {order.saga_id} ({order.case.kind}) ended {row.state}"
                    f" (finished={row.done}), expected {sorted(order.states)}"
                )
        await self._processed_once(conn, ids, orders)
        await self._versions(conn, ids, {k: r.version for k, r in found.items()})
        await self._outbox_and_timers(conn, ids)
        states = {k: r.state for k, r in found.items()}
        await self._payments(conn, orders, states)
        await self._inventory(conn, orders, states)
        await self._shipping(conn, orders, states)

    async def _processed_once(
        self, conn: AsyncConnection, ids: list[uuid.UUID], orders: list[Order]
    ) -> None:
        twice = (
            await conn.execute(
                text(
                    "SELECT message_id, count(*) AS n FROM saga.history"
                    " WHERE saga_id = ANY(:ids) AND message_id IS NOT NULL"
                    " GROUP BY message_id HAVING count(*) > 1"
                ),
                {"ids": ids},
            )
        ).all()
        for row in twice:
            self.fail(f"message {row.message_id} has {row.n} history entries (processed twice)")
        orphans = (
            await conn.execute(
                text(
                    "SELECT i.message_id FROM saga.inbox i"
                    " LEFT JOIN saga.history h ON h.message_id = i.message_id"
                    " WHERE i.saga_id = ANY(:ids) AND h.id IS NULL"
                ),
                {"ids": ids},
            )
        ).scalars()
        for message_id in orphans:
            self.fail(f"inbox row {message_id} without a history entry")
        inputs = [e.message_id for o in orders for e in o.inputs] + list(self.extra_inputs)
        self.report.inputs = len(inputs)
        seen = set(
            (
                await conn.execute(
                    text("SELECT message_id FROM saga.inbox WHERE message_id = ANY(:ids)"),
                    {"ids": inputs},
                )
            ).scalars()
        )
        for message_id in inputs:
            if message_id not in seen:
                self.fail(f"input {message_id} was never processed (no inbox row)")
        commands = (
            await conn.execute(
                text(
                    "SELECT message_id, routing_key FROM saga.outbox"
                    " WHERE saga_id = ANY(:ids) AND routing_key = ANY(:types)"
                ),
                {"ids": ids, "types": list(WORKER_OF)},
            )
        ).all()
        self.report.commands = len(commands)
        by_worker: dict[str, list[uuid.UUID]] = {}
        for command in commands:
            by_worker.setdefault(WORKER_OF[command.routing_key], []).append(command.message_id)
        for worker, command_ids in by_worker.items():
            stored = {
                r.message_id: r.has_reply
                for r in (
                    await conn.execute(
                        text(
                            f"SELECT message_id, reply_body IS NOT NULL AS has_reply"
                            f" FROM {worker}.inbox WHERE message_id = ANY(:ids)"
                        ),
                        {"ids": command_ids},
                    )
                ).all()
            }
            for command_id in command_ids:
                if not stored.get(command_id):
                    self.fail(f"{worker} never handled command {command_id}")
        replies = [reply_message_id(c.message_id) for c in commands]
        answered = set(
            (
                await conn.execute(
                    text("SELECT message_id FROM saga.inbox WHERE message_id = ANY(:ids)"),
                    {"ids": replies},
                )
            ).scalars()
        )
        for command, reply in zip(commands, replies, strict=True):
            if reply not in answered:
                self.fail(f"the reply to {command.routing_key} {command.message_id} never arrived")

    async def _versions(
        self, conn: AsyncConnection, ids: list[uuid.UUID], versions: dict[uuid.UUID, int]
    ) -> None:
        rows = (
            await conn.execute(
                text(
                    "SELECT saga_id, array_agg(version ORDER BY id) AS versions"
                    " FROM saga.history WHERE saga_id = ANY(:ids)"
                    " AND outcome IN ('started', 'transitioned') GROUP BY saga_id"
                ),
                {"ids": ids},
            )
        ).all()
        for row in rows:
            expected = list(range(1, len(row.versions) + 1))
            if list(row.versions) != expected or versions.get(row.saga_id) != len(expected):
                self.fail(
                    f"saga {row.saga_id}: transition versions {list(row.versions)} with the saga"
                    f" at version {versions.get(row.saga_id)} (a lost or doubled update)"
                )

    async def _outbox_and_timers(self, conn: AsyncConnection, ids: list[uuid.UUID]) -> None:
        unpublished = await conn.scalar(
            text(
                "SELECT count(*) FROM saga.outbox WHERE saga_id = ANY(:ids)"
                " AND published_at IS NULL"
            ),
            {"ids": ids},
        )
        if unpublished:
            self.fail(f"{unpublished} outbox rows were never published")
        leftover = await conn.scalar(
            text(
                "SELECT count(*) FROM saga.timers t JOIN saga.instances i ON i.id = t.saga_id"
                " WHERE t.saga_id = ANY(:ids) AND i.finished_at IS NOT NULL"
            ),
            {"ids": ids},
        )
        if leftover:
            self.fail(f"{leftover} timers left on finished sagas")

    async def _payments(
        self, conn: AsyncConnection, orders: list[Order], states: dict[uuid.UUID, str]
    ) -> None:
        order_ids = [o.order_id for o in orders]
        rows = (
            await conn.execute(
                text(
                    "SELECT order_id,"
                    " count(*) FILTER (WHERE kind = 'charge') AS charges,"
                    " coalesce(sum(amount_cents) FILTER (WHERE kind = 'charge'), 0) AS charged,"
                    " coalesce(sum(amount_cents) FILTER (WHERE kind = 'refund'), 0) AS refunded"
                    " FROM payments.ledger WHERE order_id = ANY(:ids) GROUP BY order_id"
                ),
                {"ids": order_ids},
            )
        ).all()
        ledger = {r.order_id: r for r in rows}
        for order in orders:
            row = ledger.get(order.order_id)
            charges, charged, refunded = (
                (0, 0, 0) if row is None else (row.charges, row.charged, row.refunded)
            )
            state = states.get(order.saga_id)
            expected = order.amount_cents if state == "completed" else 0
            if state in UNRESOLVED:
                balanced = 0 <= charged - refunded <= order.amount_cents
            else:
                balanced = charged - refunded == expected
            if charges > 1 or not balanced:
                self.fail(
                    f"order {order.order_id} ({states.get(order.saga_id)}): {charges} charges,"
                    f" charged {charged} - refunded {refunded} != {expected}"
                )
        doubled = (
            await conn.execute(
                text(
                    "SELECT message_id, kind, count(*) AS n FROM payments.ledger"
                    " WHERE order_id = ANY(:ids) GROUP BY message_id, kind HAVING count(*) > 1"
                ),
                {"ids": order_ids},
            )
        ).all()
        for row in doubled:
            self.fail(f"payments command {row.message_id} wrote {row.n} {row.kind} entries")

    async def _inventory(
        self, conn: AsyncConnection, orders: list[Order], states: dict[uuid.UUID, str]
    ) -> None:
        skus = list(self.workload.stock)
        stock = {
            r.sku: (r.on_hand, r.reserved)
            for r in (
                await conn.execute(
                    text(
                        "SELECT sku, on_hand, reserved FROM inventory.stock WHERE sku = ANY(:skus)"
                    ),
                    {"skus": skus},
                )
            ).all()
        }
        held = {
            r.sku: int(r.held)
            for r in (
                await conn.execute(
                    text(
                        "SELECT r.sku, sum(r.quantity) AS held FROM inventory.reservations r"
                        " JOIN inventory.orders o ON o.order_id = r.order_id"
                        " WHERE o.status = 'reserved' AND r.sku = ANY(:skus) GROUP BY r.sku"
                    ),
                    {"skus": skus},
                )
            ).all()
        }
        for sku, initial in self.workload.stock.items():
            on_hand, reserved = stock.get(sku, (0, 0))
            if on_hand + reserved != initial or reserved != held.get(sku, 0):
                self.fail(
                    f"sku {sku}: on_hand {on_hand} + reserved {reserved} != {initial}"
                    f" or reserved != {held.get(sku, 0)} held by reserved orders"
                )
        status = {
            r.order_id: r.status
            for r in (
                await conn.execute(
                    text("SELECT order_id, status FROM inventory.orders WHERE order_id = ANY(:i)"),
                    {"i": [o.order_id for o in orders]},
                )
            ).all()
        }
        for order in orders:
            reserved = status.get(order.order_id) == "reserved"
            if states.get(order.saga_id) in UNRESOLVED:
                continue
            if reserved != (states.get(order.saga_id) == "completed"):
                self.fail(
                    f"order {order.order_id} ({states.get(order.saga_id)}) has inventory"
                    f" status {status.get(order.order_id)}"
                )

    async def _shipping(
        self, conn: AsyncConnection, orders: list[Order], states: dict[uuid.UUID, str]
    ) -> None:
        live = set(
            (
                await conn.execute(
                    text(
                        "SELECT order_id FROM shipping.shipments"
                        " WHERE order_id = ANY(:ids) AND status = 'created'"
                    ),
                    {"ids": [o.order_id for o in orders]},
                )
            ).scalars()
        )
        for order in orders:
            completed = states.get(order.saga_id) == "completed"
            if states.get(order.saga_id) in UNRESOLVED:
                continue
            if (order.order_id in live) != completed:
                self.fail(
                    f"order {order.order_id} ({states.get(order.saga_id)}): live shipment"
                    f" {order.order_id in live}"
                )

    # --- broker ---------------------------------------------------------------------------------

    async def _broker(self, connection: AbstractRobustConnection) -> None:
        topology = self.settings.topology
        names = [*work_queues(topology), *(topology.parking_queue(c) for c in CONSUMERS)]
        depths = await queue_depths(connection, names)
        for name, depth in depths.items():
            if depth and not name.endswith(".parking"):
                self.fail(f"queue {name} still holds {depth} messages")
        parking = ParkingQueues(connection, topology, CONSUMERS)
        for consumer in CONSUMERS:
            queue = topology.parking_queue(consumer)
            expected = dict(self.expected_parked.get(consumer, {}))
            if not depths.get(queue) and not expected:
                continue
            parked = await parking.peek(queue, 10_000)
            ids = Counter(p.message_id for p in parked)
            for message_id, n in ids.items():
                if n > 1:
                    self.fail(f"{queue}: message {message_id} parked {n} times")
            for item in parked:
                self.report.parked[f"{consumer}:{item.reason}"] += 1
                want = expected.pop(item.message_id or "", None)
                if want is None:
                    self.fail(
                        f"{queue}: unexpected parked {item.message_type} {item.message_id}"
                        f" ({item.reason}: {item.error})"
                    )
                elif want != item.reason:
                    self.fail(f"{queue}: {item.message_id} parked as {item.reason}, not {want}")
            for message_id, reason in expected.items():
                self.fail(f"{queue}: {message_id} was not parked (expected {reason})")
        await self._tap(connection, topology)

    async def _tap(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        name = tap_queue(topology)
        depth = await queue_depth(connection, name)
        if depth is None:
            return
        seen: Counter[tuple[str, str]] = Counter()
        contents: dict[str, set[bytes]] = {}
        channel = await connection.channel()
        try:
            await channel.set_qos(prefetch_count=1000)
            queue = await channel.declare_queue(name, passive=True)
            async with asyncio.timeout(60), queue.iterator(no_ack=True) as messages:
                if depth:
                    async for message in messages:
                        message_id = message.message_id or ""
                        seen[(message_id, message.type or "")] += 1
                        contents.setdefault(message_id, set()).add(
                            hashlib.sha256(message.body).digest()
                        )
                        if sum(seen.values()) >= depth:
                            break
        finally:
            await channel.close()
        self.report.publishes = sum(seen.values())
        for (message_id, message_type), n in seen.items():
            if n > 1:
                self.report.duplicate_publishes[message_type] += n - 1
            if len(contents.get(message_id, ())) > 1:
                # A copy must be the same message: a receiver's inbox drops the second copy,
                # so a re-decided reply under the first one's id would silently go unheard.
                self.fail(
                    f"{message_type} {message_id} was published with {len(contents[message_id])}"
                    " different bodies (decided again instead of re-sent as stored)"
                )


async def queue_depth(connection: AbstractRobustConnection, name: str) -> int | None:
    """Messages in a queue (ready; unacked ones too once their consumers are gone), or None."""
    return (await queue_depths(connection, [name]))[name]


def work_queues(topology: Topology) -> list[str]:
    """Every consumer's work queue and retry queues: empty once all work is done."""
    return [
        name
        for consumer in CONSUMERS
        for name in (
            topology.work_queue(consumer),
            *(topology.retry_queue(consumer, d) for d in topology.retry_delays_ms),
        )
    ]


async def wait_for_quiet_queues(
    connection: AbstractRobustConnection,
    topology: Topology,
    within: float,
    quiet_for: float = 1.0,
) -> None:
    """Wait until every work and retry queue has stayed empty for `quiet_for` seconds.

    Sagas can reach their end state while duplicates of commands they already consumed are
    still on their way back to a queue (a host whose link was cut handles its held batch again
    and fails to ack it on the dead channel, and the broker requeues it). Stopping the
    processes then leaves those duplicates in the queue, and the broker check reports them as
    work left undone. On timeout this returns and lets that check report what is left."""
    names = work_queues(topology)
    deadline = time.monotonic() + within
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        try:
            busy = any((await queue_depths(connection, names)).values())
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError):
            # The scenario may have closed every connection, this one too: it reconnects.
            busy = True
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_for:
            return
        await asyncio.sleep(0.2)


async def queue_depths(
    connection: AbstractRobustConnection, names: Iterable[str]
) -> dict[str, int | None]:
    """Depth of each queue by passive declare (None: no such queue), on as few channels as
    possible: a failed passive declare closes its channel."""
    depths: dict[str, int | None] = {}
    channel = await connection.channel()
    try:
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                depths[name] = None
                channel = await connection.channel()
                continue
            depths[name] = int(queue.declaration_result.message_count or 0)
    finally:
        if not channel.is_closed:
            await channel.close()
    return depths


def _duplicate_handlings(log: str) -> int:
    count = 0
    for line in log.splitlines():
        if '"command handled"' not in line:
            continue
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if entry.get("duplicate") is True:
            count += 1
    return count
