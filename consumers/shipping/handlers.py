"""Shipping's command handlers."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.locks import lock_order, lock_orders
from consumers.runtime import BatchHandler, Handler, HandlerMap
from consumers.settings import WorkerSettings
from consumers.shipping import rules
from consumers.shipping.tables import SCHEMA, shipments
from contracts.base import Command, ReplyEvent
from contracts.envelope import Envelope
from contracts.order import (
    CancelShipment,
    CreateShipment,
    OrderShipped,
    ShipmentCancelled,
    ShipmentFailed,
)

# Built once: the hot path then skips building the statement and its cache key per command.
_SHIPMENT = select(shipments.c.status, shipments.c.tracking_number).where(
    shipments.c.order_id == bindparam("order_id")
)
# The batch forms: one statement each for all the orders of a batch of shipments. The read
# probes the primary key once per order (a LATERAL subquery that OFFSET 0 keeps from being
# flattened into a join): with `IN (...)` of 64 keys, a planner without statistics (tables never
# analyzed) prefers one sequential scan of the whole table, and a prepared statement keeps that
# plan. The order ids passed must be distinct (each is one probe).
_SHIPMENTS = text(
    "SELECT s.order_id, s.status, s.tracking_number"
    " FROM unnest(CAST(:order_ids AS text[])) AS k(order_id) CROSS JOIN LATERAL"
    f" (SELECT order_id, status, tracking_number FROM {SCHEMA}.shipments"
    " WHERE order_id = k.order_id OFFSET 0) AS s"
)
_NEW_SHIPMENTS = text(
    f"INSERT INTO {SCHEMA}.shipments (order_id, saga_id, country, tracking_number, status)"
    " SELECT o, s, c, t, 'created' FROM unnest(CAST(:order_ids AS text[]),"
    " CAST(:saga_ids AS uuid[]), CAST(:countries AS text[]), CAST(:tracking AS text[]))"
    " AS n(o, s, c, t)"
)


async def load_shipment(conn: AsyncConnection, order_id: str) -> rules.Shipment | None:
    row = (await conn.execute(_SHIPMENT, {"order_id": order_id})).first()
    return None if row is None else rules.Shipment(rules.ShipmentStatus(row[0]), row[1])


async def create_shipment(
    conn: AsyncConnection, envelopes: Sequence[Envelope[CreateShipment]]
) -> list[ReplyEvent]:
    """Shipments for distinct orders: lock, read, decide each, write the new ones."""
    commands = [envelope.payload for envelope in envelopes]
    order_ids = [command.order_id for command in commands]
    # Serialise with a racing CancelShipment: the row may not exist yet (see consumers.locks).
    await lock_orders(conn, SCHEMA, order_ids)
    existing = {
        order_id: rules.Shipment(rules.ShipmentStatus(status), tracking)
        for order_id, status, tracking in await conn.execute(
            _SHIPMENTS, {"order_ids": sorted(set(order_ids))}
        )
    }
    replies: list[ReplyEvent] = []
    created: list[tuple[Envelope[CreateShipment], str]] = []
    for envelope, command in zip(envelopes, commands, strict=True):
        decision = rules.decide_shipment(
            existing.get(command.order_id),
            order_id=command.order_id,
            country=command.ship_to.country,
        )
        if isinstance(decision, rules.Refuse):
            replies.append(ShipmentFailed(order_id=command.order_id, reason=decision.reason))
            continue
        if decision.new:
            created.append((envelope, decision.tracking_number))
        replies.append(
            OrderShipped(order_id=command.order_id, tracking_number=decision.tracking_number)
        )
    if created:
        await conn.execute(
            _NEW_SHIPMENTS,
            {
                "order_ids": [e.payload.order_id for e, _ in created],
                "saga_ids": [e.correlation_id for e, _ in created],
                "countries": [e.payload.ship_to.country for e, _ in created],
                "tracking": [tracking for _, tracking in created],
            },
        )
    return replies


async def cancel_shipment(conn: AsyncConnection, envelope: Envelope[CancelShipment]) -> ReplyEvent:
    order_id = envelope.payload.order_id
    await lock_order(conn, SCHEMA, order_id)
    action = rules.decide_cancel(await load_shipment(conn, order_id))
    if action is rules.CancelAction.CANCEL:
        await conn.execute(
            update(shipments)
            .where(shipments.c.order_id == order_id)
            .values(status=rules.ShipmentStatus.CANCELLED.value, updated_at=func.now())
        )
    elif action is rules.CancelAction.MARK:
        await conn.execute(
            insert(shipments).values(
                order_id=order_id,
                saga_id=envelope.correlation_id,
                status=rules.ShipmentStatus.CANCELLED.value,
            )
        )
    return ShipmentCancelled(order_id=order_id)


def make_handlers(config: WorkerSettings) -> HandlerMap:
    handlers: dict[type[Command], Handler | BatchHandler] = {
        CreateShipment: BatchHandler(key=_order_of, run=create_shipment),
        CancelShipment: cancel_shipment,
    }
    return handlers


def _order_of(envelope: Envelope[CreateShipment]) -> str:
    return envelope.payload.order_id
