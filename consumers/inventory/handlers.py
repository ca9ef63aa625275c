"""Inventory's command handlers and stock helpers.

Lock order, the same in every transaction that touches stock: the order's advisory lock first
(consumers.locks), then stock rows by sku in code-point order (`COLLATE "C"`, which is also
Python's sort order). Two reservations sharing skus therefore queue instead of deadlocking.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.inventory import rules
from consumers.inventory.tables import SCHEMA, orders, reservations, stock
from consumers.locks import lock_order, lock_orders
from consumers.runtime import BatchHandler, Handler, HandlerMap
from consumers.settings import WorkerSettings
from contracts.base import Command, ReplyEvent
from contracts.envelope import Envelope
from contracts.order import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReleaseInventory,
    ReserveInventory,
)

# Move quantity between on_hand and reserved; `delta` > 0 reserves, < 0 releases. Both columns
# change in one statement, so on_hand + reserved is conserved by construction.
_MOVE = (
    update(stock)
    .where(stock.c.sku == bindparam("b_sku"))
    .values(
        on_hand=stock.c.on_hand - bindparam("delta"),
        reserved=stock.c.reserved + bindparam("delta"),
    )
)


_ORDER_STATUS = select(orders.c.status).where(orders.c.order_id == bindparam("order_id"))

# Reads by an array of keys probe the primary key once per key: a LATERAL subquery that cannot be
# flattened into a join (OFFSET 0, or FOR UPDATE) is a nested loop over the array whatever the
# planner knows. With `IN (...)` of 64 keys, a planner without statistics (tables never analyzed)
# prefers one sequential scan of the whole table, and a prepared statement keeps that plan. Keys
# passed must be distinct (each is one probe).

# Locks the existing stock rows of some skus, in lock order: the loop locks them in the order of
# the array, so callers pass the skus sorted (Python's order, which is COLLATE "C").
_LOCK_STOCK = text(
    "SELECT s.sku, s.on_hand FROM unnest(CAST(:skus AS text[])) AS k(sku) CROSS JOIN LATERAL"
    f" (SELECT sku, on_hand FROM {SCHEMA}.stock WHERE sku = k.sku FOR UPDATE) AS s"
)


# The batch forms of a batch of reservations: one statement each for all of its orders.
_ORDER_STATUSES = text(
    "SELECT o.order_id, o.status FROM unnest(CAST(:order_ids AS text[])) AS k(order_id)"
    f" CROSS JOIN LATERAL (SELECT order_id, status FROM {SCHEMA}.orders"
    " WHERE order_id = k.order_id OFFSET 0) AS o"
)
_NEW_ORDERS = text(
    f"INSERT INTO {SCHEMA}.orders (order_id, saga_id, status)"
    " SELECT o, s, 'reserved' FROM unnest(CAST(:order_ids AS text[]), CAST(:saga_ids AS uuid[]))"
    " AS t(o, s)"
)
_NEW_RESERVATIONS = text(
    f"INSERT INTO {SCHEMA}.reservations (order_id, sku, quantity)"
    " SELECT * FROM unnest(CAST(:order_ids AS text[]), CAST(:skus AS text[]),"
    " CAST(:quantities AS int[]))"
)


async def order_status(conn: AsyncConnection, order_id: str) -> rules.OrderStatus | None:
    value = await conn.scalar(_ORDER_STATUS, {"order_id": order_id})
    return None if value is None else rules.OrderStatus(value)


async def lock_stock(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, int]:
    """Lock the existing rows of these skus (in lock order); their on_hand by sku."""
    rows = await conn.execute(_LOCK_STOCK, {"skus": sorted(set(skus))})
    return {sku: on_hand for sku, on_hand in rows}


async def _move(conn: AsyncConnection, deltas: Mapping[str, int]) -> None:
    """One single-row UPDATE per sku, sent in one round trip (asyncpg's executemany)."""
    if not deltas:
        return
    await conn.execute(
        _MOVE, [{"b_sku": sku, "delta": delta} for sku, delta in sorted(deltas.items())]
    )


async def reserve_inventory(
    conn: AsyncConnection, envelopes: Sequence[Envelope[ReserveInventory]]
) -> list[ReplyEvent]:
    """Reservations for distinct orders, decided in order against stock read once: a later
    reservation sees what the earlier ones of the batch took."""
    commands = [envelope.payload for envelope in envelopes]
    await lock_orders(conn, SCHEMA, [command.order_id for command in commands])
    statuses = {
        order_id: rules.OrderStatus(status)
        for order_id, status in await conn.execute(
            _ORDER_STATUSES, {"order_ids": sorted({command.order_id for command in commands})}
        )
    }
    requested = [rules.requested_quantities(command.lines) for command in commands]
    wanted = {
        sku
        for command, quantities in zip(commands, requested, strict=True)
        if command.order_id not in statuses
        for sku in quantities
    }
    on_hand = await lock_stock(conn, wanted) if wanted else {}
    replies: list[ReplyEvent] = []
    reserved: list[tuple[Envelope[ReserveInventory], Mapping[str, int]]] = []
    moves: Counter[str] = Counter()
    for envelope, command, quantities in zip(envelopes, commands, requested, strict=True):
        status = statuses.get(command.order_id)
        decision = rules.decide_reservation(status, quantities, on_hand if status is None else {})
        if isinstance(decision, rules.Reject):
            replies.append(
                InventoryReservationFailed(order_id=command.order_id, reason=decision.reason)
            )
            continue
        if isinstance(decision, rules.Reserve):
            reserved.append((envelope, decision.quantities))
            for sku, quantity in decision.quantities.items():
                on_hand[sku] -= quantity
                moves[sku] += quantity
        replies.append(InventoryReserved(order_id=command.order_id))
    if reserved:
        await _write_reservations(conn, reserved, moves)
    return replies


async def _write_reservations(
    conn: AsyncConnection,
    reserved: Sequence[tuple[Envelope[ReserveInventory], Mapping[str, int]]],
    moves: Mapping[str, int],
) -> None:
    await conn.execute(
        _NEW_ORDERS,
        {
            "order_ids": [envelope.payload.order_id for envelope, _ in reserved],
            "saga_ids": [envelope.correlation_id for envelope, _ in reserved],
        },
    )
    lines = [
        (envelope.payload.order_id, sku, quantity)
        for envelope, quantities in reserved
        for sku, quantity in quantities.items()
    ]
    await conn.execute(
        _NEW_RESERVATIONS,
        {
            "order_ids": [line[0] for line in lines],
            "skus": [line[1] for line in lines],
            "quantities": [line[2] for line in lines],
        },
    )
    # One row by its key per sku, in one round trip: an UPDATE ... FROM unnest join (or by
    # `ctid = ANY(...)`) kept the generic plan made while the stock table was empty, a
    # sequential scan of all stock (tests/integration/test_plans.py).
    await _move(conn, moves)


async def release_inventory(
    conn: AsyncConnection, envelope: Envelope[ReleaseInventory]
) -> ReplyEvent:
    order_id = envelope.payload.order_id
    await lock_order(conn, SCHEMA, order_id)
    status = await order_status(conn, order_id)
    decision = rules.decide_release(status)
    if decision.restore:
        rows = await conn.execute(
            select(reservations.c.sku, reservations.c.quantity).where(
                reservations.c.order_id == order_id
            )
        )
        reserved = {sku: quantity for sku, quantity in rows}
        await lock_stock(conn, reserved)
        await _move(conn, {sku: -quantity for sku, quantity in reserved.items()})
    if decision.mark:
        statement = pg_insert(orders).values(
            order_id=order_id,
            saga_id=envelope.correlation_id,
            status=rules.OrderStatus.RELEASED.value,
        )
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[orders.c.order_id],
                set_={
                    "status": statement.excluded.status,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )
    return InventoryReleased(order_id=order_id)


def make_handlers(config: WorkerSettings) -> HandlerMap:
    handlers: dict[type[Command], Handler | BatchHandler] = {
        ReserveInventory: BatchHandler(key=_order_of, run=reserve_inventory),
        ReleaseInventory: release_inventory,
    }
    return handlers


def _order_of(envelope: Envelope[ReserveInventory]) -> str:
    return envelope.payload.order_id


async def seed_stock(conn: AsyncConnection, quantities: Mapping[str, int]) -> None:
    """Set on_hand for these skus (creating them); reserved quantities are kept. Demos and tests."""
    if not quantities:
        return
    # Rows in lock order: the upsert locks existing rows as it goes.
    statement = pg_insert(stock).values(
        [{"sku": sku, "on_hand": qty, "reserved": 0} for sku, qty in sorted(quantities.items())]
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[stock.c.sku], set_={"on_hand": statement.excluded.on_hand}
        )
    )


async def stock_levels(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(on_hand, reserved) per existing sku."""
    rows = await conn.execute(
        select(stock.c.sku, stock.c.on_hand, stock.c.reserved).where(stock.c.sku.in_(list(skus)))
    )
    return {sku: (on_hand, reserved) for sku, on_hand, reserved in rows}
