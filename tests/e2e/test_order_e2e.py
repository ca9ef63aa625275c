"""Fifty orders with a mix of outcomes through real processes, checked by ledger invariants."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass

import aio_pika
import pytest
from sqlalchemy import text

from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from sagaline.db import create_engine
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings
from tests.e2e.conftest import System
from tests.e2e.diagnostics import final_states

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PLENTY = "e2e-sku-plenty"
NONE_LEFT = "e2e-sku-none"
INITIAL_STOCK = {PLENTY: 1_000, NONE_LEFT: 0}


@dataclass(frozen=True)
class Case:
    kind: str
    expected: str
    card: str = "tok_ok"
    sku: str = PLENTY
    country: str = "DE"


CASES = (
    [Case("success", "completed")] * 30
    + [Case("declined", "failed", card="tok_declined")] * 5
    + [Case("out-of-stock", "failed", sku=NONE_LEFT)] * 5
    + [Case("unsupported-destination", "failed", country="AQ")] * 5
    + [Case("cancelled", "cancelled")] * 5
)


def _submitted(saga_id: uuid.UUID, case: Case, index: int) -> Envelope[o.OrderSubmitted]:
    return new_envelope(
        o.OrderSubmitted(
            order_id=f"e2e-{saga_id}",
            customer_id=f"customer-{index % 7}",
            amount_cents=1_000 + index,
            currency="EUR",
            card_token=case.card,
            lines=(o.OrderLine(sku=case.sku, quantity=1 + index % 3),),
            ship_to=o.Address(country=case.country, postcode="10115", city="Berlin"),
        ),
        correlation_id=saga_id,
    )


async def _seed(settings: Settings) -> None:
    from consumers.inventory.handlers import seed_stock

    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            await seed_stock(conn, INITIAL_STOCK)
    finally:
        await engine.dispose()


async def test_fifty_orders_reach_their_expected_final_states_with_balanced_ledgers(
    system: System, settings: Settings
) -> None:
    await _seed(settings)
    sagas: dict[uuid.UUID, tuple[Case, Envelope[o.OrderSubmitted]]] = {}
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = settings.topology.events_exchange
        for index, case in enumerate(CASES):
            saga_id = uuid.uuid4()
            submitted = _submitted(saga_id, case, index)
            sagas[saga_id] = (case, submitted)
            if case.kind == "cancelled":
                # The customer's cancellation overtakes the order: nothing may be charged.
                cancel = o.OrderCancellationRequested(
                    order_id=submitted.payload.order_id, reason="changed mind"
                )
                await publish_envelope(
                    channel, exchange, new_envelope(cancel, correlation_id=saga_id)
                )
            await publish_envelope(channel, exchange, submitted)
    finally:
        await connection.close()

    engine = create_engine(settings, pool_size=2)
    try:
        states = await final_states(engine, set(sagas), deadline_s=150.0, poll_s=0.25)
        async with engine.connect() as conn:
            unpublished = await _wait_outbox_drained(conn)
            charges = await _ledger_by_order(conn)
            stock = {
                row.sku: (row.on_hand, row.reserved)
                for row in (
                    await conn.execute(text("SELECT sku, on_hand, reserved FROM inventory.stock"))
                ).all()
            }
            shipments = {
                row.order_id
                for row in (
                    await conn.execute(
                        text("SELECT order_id FROM shipping.shipments WHERE status = 'created'")
                    )
                ).all()
            }
    finally:
        await engine.dispose()

    outcomes = Counter(states.values())
    assert outcomes == Counter({"completed": 30, "failed": 15, "cancelled": 5}), outcomes
    for saga_id, (case, submitted) in sagas.items():
        assert states[saga_id] == case.expected, (case.kind, states[saga_id])
        order_id = submitted.payload.order_id
        charged, refunded = charges.get(order_id, (0, 0))
        expected_net = submitted.payload.amount_cents if case.expected == "completed" else 0
        assert charged - refunded == expected_net, (case.kind, charged, refunded)
        assert (order_id in shipments) == (case.expected == "completed")
    for sku, initial in INITIAL_STOCK.items():
        on_hand, reserved = stock[sku]
        assert on_hand + reserved == initial, sku
    assert unpublished == 0
    for process in system.processes:
        assert process.popen is not None and process.popen.poll() is None, process.log_tail()


async def _wait_outbox_drained(conn, deadline_s: float = 20.0) -> int:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(deadline_s):
        while True:
            count = int(
                await conn.scalar(
                    text("SELECT count(*) FROM saga.outbox WHERE published_at IS NULL")
                )
                or 0
            )
            if count == 0:
                return 0
            await conn.rollback()
            await asyncio.sleep(0.2)


async def _ledger_by_order(conn) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    rows = (
        await conn.execute(
            text(
                "SELECT order_id,"
                " coalesce(sum(amount_cents) FILTER (WHERE kind = 'charge'), 0) AS charged,"
                " coalesce(sum(amount_cents) FILTER (WHERE kind = 'refund'), 0) AS refunded"
                " FROM payments.ledger GROUP BY order_id"
            )
        )
    ).all()
    return {r.order_id: (int(r.charged), int(r.refunded)) for r in rows}
