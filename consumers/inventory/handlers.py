"""Inventory's command handlers and stock helpers.

Lock order, the same in every transaction that touches stock: the order's advisory lock first
(consumers.locks), then stock rows by sku in code-point order (`COLLATE "C"`, which is also
Python's sort order). Two reservations sharing skus therefore queue instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.inventory import rules
from consumers.inventory.tables import SCHEMA, orders, reservations, stock
from consumers.locks import lock_order
from consumers.runtime import Handler, HandlerMap
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

_BY_SKU = stock.c.sku.collate("C")

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
# Locks the existing stock rows of some skus, in lock order.
_LOCK_STOCK = (
    select(stock.c.sku, stock.c.on_hand)
    .where(stock.c.sku.in_(bindparam("skus", expanding=True)))
    .order_by(_BY_SKU)
    .with_for_update()
)


async def order_status(conn: AsyncConnection, order_id: str) -> rules.OrderStatus | None:
    value = await conn.scalar(_ORDER_STATUS, {"order_id": order_id})
    return None if value is None else rules.OrderStatus(value)


async def lock_stock(conn: AsyncConnection, skus: Iterable[str]) -> dict[str, int]:
    """Lock the existing rows of these skus (in lock order); their on_hand by sku."""
    rows = await conn.execute(_LOCK_STOCK, {"skus": list(skus)})
    return {sku: on_hand for sku, on_hand in rows}


async def _move(conn: AsyncConnection, deltas: Mapping[str, int]) -> None:
    await conn.execute(
        _MOVE, [{"b_sku": sku, "delta": delta} for sku, delta in sorted(deltas.items())]
    )


async def reserve_inventory(
    conn: AsyncConnection, envelope: Envelope[ReserveInventory]
) -> ReplyEvent:
    command = envelope.payload
    await lock_order(conn, SCHEMA, command.order_id)
    status = await order_status(conn, command.order_id)
    requested = rules.requested_quantities(command.lines)
    on_hand = await lock_stock(conn, requested) if status is None else {}
    decision = rules.decide_reservation(status, requested, on_hand)
    if isinstance(decision, rules.Reject):
        return InventoryReservationFailed(order_id=command.order_id, reason=decision.reason)
    if isinstance(decision, rules.Reserve):
        await conn.execute(
            insert(orders).values(
                order_id=command.order_id,
                saga_id=envelope.correlation_id,
                status=rules.OrderStatus.RESERVED.value,
            )
        )
        await conn.execute(
            insert(reservations),
            [
                {"order_id": command.order_id, "sku": sku, "quantity": quantity}
                for sku, quantity in decision.quantities.items()
            ],
        )
        await _move(conn, decision.quantities)
    return InventoryReserved(order_id=command.order_id)


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
    handlers: dict[type[Command], Handler] = {
        ReserveInventory: reserve_inventory,
        ReleaseInventory: release_inventory,
    }
    return handlers


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
