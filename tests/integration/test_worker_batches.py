"""A worker's batch has the outcome of its commands handled one by one, in order.

The order workers answer their forward commands (charge, reserve, ship) with set-based batch
handlers. These tests give `WorkerProcess.handle_batch` batches whose commands depend on each
other — the same order twice, a charge and its refund, reservations competing for the last
units — and check the replies and the workers' tables against what sequential handling gives.
Real PostgreSQL; the broker is not involved (handle_batch does not publish).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.inventory import tables as inv
from consumers.inventory.handlers import seed_stock, stock_levels
from consumers.inventory.spec import SPEC as INVENTORY
from consumers.payments import rules as pay_rules
from consumers.payments import tables as pay
from consumers.payments.spec import SPEC as PAYMENTS
from consumers.runtime import WorkerProcess
from consumers.shipping.spec import SPEC as SHIPPING
from consumers.testing import offline_worker
from contracts import order as o
from contracts.base import Command
from contracts.behaviour import CONTENT_TYPE
from contracts.envelope import Envelope, new_envelope
from sagaline.db import create_unpooled_engine
from sagaline.messaging.parsing import parse_body
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
async def db(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(settings.sqlalchemy_url)
    yield engine
    await engine.dispose()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def command(payload: Command, saga: uuid.UUID | None = None) -> Envelope[Any]:
    return new_envelope(payload, correlation_id=saga or uuid.uuid4())


async def replies_of(
    process: WorkerProcess, commands: list[Envelope[Any]]
) -> list[tuple[Any, bool]]:
    results = await process.handle_batch([(c, 1) for c in commands])
    return [(parse_body(reply.body, CONTENT_TYPE, 1 << 20).payload, dup) for reply, dup in results]


def payment(order_id: str, amount: int = 1_000) -> o.ProcessPayment:
    return o.ProcessPayment(
        order_id=order_id,
        customer_id="c-batch",
        amount_cents=amount,
        currency="EUR",
        card_token="tok_ok",
    )


def reserve(order_id: str, **quantities: int) -> o.ReserveInventory:
    lines = tuple(o.OrderLine(sku=sku, quantity=q) for sku, q in quantities.items())
    return o.ReserveInventory(order_id=order_id, lines=lines)


async def test_reservations_in_one_batch_compete_for_stock_in_order(db: AsyncEngine) -> None:
    sku = uid("sku")
    async with db.begin() as conn:
        await seed_stock(conn, {sku: 3})
    first, second, third = uid("order"), uid("order"), uid("order")
    replies = await replies_of(
        offline_worker(INVENTORY, db),
        [
            command(reserve(first, **{sku: 2})),
            command(reserve(second, **{sku: 2})),  # one unit left: refused
            command(reserve(third, **{sku: 1})),  # takes the last unit
        ],
    )

    assert [type(reply) for reply, _ in replies] == [
        o.InventoryReserved,
        o.InventoryReservationFailed,
        o.InventoryReserved,
    ]
    async with db.connect() as conn:
        assert await stock_levels(conn, [sku]) == {sku: (0, 3)}
        reserved = await conn.execute(
            select(inv.reservations.c.order_id, inv.reservations.c.quantity).where(
                inv.reservations.c.sku == sku
            )
        )
        assert dict(reserved.all()) == {first: 2, third: 1}


async def test_a_release_after_its_reservation_in_one_batch_restores_the_stock(
    db: AsyncEngine,
) -> None:
    sku = uid("sku")
    async with db.begin() as conn:
        await seed_stock(conn, {sku: 2})
    order, other = uid("order"), uid("order")
    replies = await replies_of(
        offline_worker(INVENTORY, db),
        [
            command(reserve(order, **{sku: 2})),
            command(o.ReleaseInventory(order_id=order)),
            command(reserve(other, **{sku: 2})),  # sees the released units
        ],
    )

    assert [type(reply) for reply, _ in replies] == [
        o.InventoryReserved,
        o.InventoryReleased,
        o.InventoryReserved,
    ]
    async with db.connect() as conn:
        assert await stock_levels(conn, [sku]) == {sku: (0, 2)}


async def test_one_order_charged_twice_in_a_batch_is_charged_once_then_refunded(
    db: AsyncEngine,
) -> None:
    order = uid("order")
    replies = await replies_of(
        offline_worker(PAYMENTS, db),
        [
            command(payment(order, 1_500)),
            command(payment(order, 1_500)),  # another command id for the same order
            command(o.RefundPayment(order_id=order)),
        ],
    )

    expected_charge = o.PaymentProcessed(
        order_id=order, payment_id=pay_rules.payment_id_for(order), amount_cents=1_500
    )
    assert replies == [
        (expected_charge, False),
        (expected_charge, False),
        (o.PaymentRefunded(order_id=order, amount_cents=1_500), False),
    ]
    async with db.connect() as conn:
        rows = await conn.execute(
            select(pay.ledger.c.kind, pay.ledger.c.amount_cents)
            .where(pay.ledger.c.order_id == order)
            .order_by(pay.ledger.c.entry_id)
        )
        assert rows.all() == [("charge", 1_500), ("refund", 1_500)]


async def test_a_command_twice_in_a_batch_is_handled_once_and_answered_twice(
    db: AsyncEngine,
) -> None:
    order = uid("order")
    ship = command(
        o.CreateShipment(
            order_id=order,
            ship_to=o.Address(country="FR", postcode="69001", city="Lyon"),
            lines=(o.OrderLine(sku="sku-1", quantity=1),),
        )
    )
    process = offline_worker(SHIPPING, db)
    (first, again) = await process.handle_batch([(ship, 1), (ship, 1)])
    (later,) = await process.handle_batch([(ship, 1)])

    assert (first[1], again[1], later[1]) == (False, True, True)
    assert first[0].body == again[0].body == later[0].body
