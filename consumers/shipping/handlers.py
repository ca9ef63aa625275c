"""Shipping's command handlers."""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.locks import lock_order
from consumers.runtime import Handler, HandlerMap
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
_NEW_SHIPMENT = insert(shipments)


async def load_shipment(conn: AsyncConnection, order_id: str) -> rules.Shipment | None:
    row = (await conn.execute(_SHIPMENT, {"order_id": order_id})).first()
    return None if row is None else rules.Shipment(rules.ShipmentStatus(row[0]), row[1])


async def create_shipment(conn: AsyncConnection, envelope: Envelope[CreateShipment]) -> ReplyEvent:
    command = envelope.payload
    # Serialise with a racing CancelShipment: the row may not exist yet (see consumers.locks).
    await lock_order(conn, SCHEMA, command.order_id)
    decision = rules.decide_shipment(
        await load_shipment(conn, command.order_id),
        order_id=command.order_id,
        country=command.ship_to.country,
    )
    if isinstance(decision, rules.Refuse):
        return ShipmentFailed(order_id=command.order_id, reason=decision.reason)
    if decision.new:
        await conn.execute(
            _NEW_SHIPMENT,
            {
                "order_id": command.order_id,
                "saga_id": envelope.correlation_id,
                "country": command.ship_to.country,
                "tracking_number": decision.tracking_number,
                "status": rules.ShipmentStatus.CREATED.value,
            },
        )
    return OrderShipped(order_id=command.order_id, tracking_number=decision.tracking_number)


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
    handlers: dict[type[Command], Handler] = {
        CreateShipment: create_shipment,
        CancelShipment: cancel_shipment,
    }
    return handlers
