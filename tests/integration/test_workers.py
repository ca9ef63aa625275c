"""The order workers on a real RabbitMQ and PostgreSQL: replies, idempotency, stock invariants.

The three workers run in-process for the whole module, in a broker namespace of their own.
Every test uses fresh order ids and skus, so tests share the database without interfering.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection, DeliveryMode
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers import WORKERS, WorkerSettings, build_app
from consumers.inventory import tables as inv
from consumers.inventory.handlers import seed_stock, stock_levels
from consumers.payments import rules as pay_rules
from consumers.payments import tables as pay
from consumers.payments.handlers import set_customer_limit
from consumers.shipping import rules as ship_rules
from consumers.shipping import tables as ship
from consumers.testing import ReplyListener, delete_namespace, running, send_command
from contracts import order as o
from contracts.base import Command
from contracts.envelope import Envelope, new_envelope
from contracts.ids import derived_id
from contracts.topology import H_CAUSATION_ID, H_SCHEMA_VERSION
from sagaline.db import create_unpooled_engine
from sagaline.service import confirm_channel, connect_amqp
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ADDRESS = o.Address(country="DE", postcode="10115", city="Berlin")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
async def wsettings(settings: Settings) -> AsyncIterator[Settings]:
    """The run's settings with a broker namespace private to this module."""
    own = settings.model_copy(update={"namespace": f"{settings.namespace}-w{uuid.uuid4().hex[:6]}"})
    yield own
    connection = await connect_amqp(own)
    try:
        await delete_namespace(await connection.channel(), own.topology, WORKERS)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def workers(wsettings: Settings) -> AsyncIterator[None]:
    config = WorkerSettings(fail_commands=frozenset())
    async with (
        running(build_app("payments", wsettings, config)),
        running(build_app("inventory", wsettings, config)),
        running(build_app("shipping", wsettings, config)),
    ):
        yield


@pytest.fixture(scope="module")
async def db(wsettings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(wsettings.sqlalchemy_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def connection(wsettings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect_amqp(wsettings)
    yield connection
    await connection.close()


@pytest.fixture
async def channel(connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    channel = await confirm_channel(connection)
    yield channel
    await channel.close()


@pytest.fixture
async def replies(
    workers: None, channel: AbstractChannel, wsettings: Settings
) -> AsyncIterator[ReplyListener]:
    async with ReplyListener(channel, wsettings.topology) as listener:
        yield listener


class Client:
    """Send a command, get its reply."""

    def __init__(self, channel: AbstractChannel, settings: Settings, replies: ReplyListener):
        self.channel = channel
        self.settings = settings
        self.replies = replies

    async def send(self, envelope: Envelope[Any], **headers: Any) -> None:
        await send_command(self.channel, self.settings.topology, envelope, **headers)

    async def call(self, command: Command, saga_id: uuid.UUID | None = None) -> Any:
        envelope = new_envelope(command, correlation_id=saga_id or uuid.uuid4())
        await self.send(envelope)
        (reply,) = await self.replies.wait(envelope.message_id)
        return reply.envelope.payload


@pytest.fixture
def client(channel: AbstractChannel, wsettings: Settings, replies: ReplyListener) -> Client:
    return Client(channel, wsettings, replies)


def payment(
    order_id: str, amount: int = 1_000, token: str = "tok_ok", customer: str = "c-1"
) -> o.ProcessPayment:
    return o.ProcessPayment(
        order_id=order_id,
        customer_id=customer,
        amount_cents=amount,
        currency="EUR",
        card_token=token,
    )


def reserve(order_id: str, **quantities: int) -> o.ReserveInventory:
    lines = tuple(o.OrderLine(sku=sku, quantity=q) for sku, q in quantities.items())
    return o.ReserveInventory(order_id=order_id, lines=lines)


async def ledger_rows(db: AsyncEngine, order_id: str) -> list[tuple[str, int]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(pay.ledger.c.kind, pay.ledger.c.amount_cents)
            .where(pay.ledger.c.order_id == order_id)
            .order_by(pay.ledger.c.entry_id)
        )
        return [(kind, amount) for kind, amount in rows]


# --- payments -----------------------------------------------------------------------------------


async def test_reply_envelope_and_properties(client: Client, db: AsyncEngine) -> None:
    saga = uuid.uuid4()
    order_id = uid("order")
    command = new_envelope(payment(order_id, 1_234), correlation_id=saga)
    await client.send(command)
    (reply,) = await client.replies.wait(command.message_id)

    assert reply.envelope.payload == o.PaymentProcessed(
        order_id=order_id, payment_id=pay_rules.payment_id_for(order_id), amount_cents=1_234
    )
    assert reply.envelope.message_id == derived_id(command.message_id, "reply")
    assert reply.envelope.correlation_id == saga
    assert reply.envelope.causation_id == command.message_id
    message = reply.message
    assert message.routing_key == "PaymentProcessed"
    assert message.message_id == str(reply.envelope.message_id)
    assert message.correlation_id == str(saga)
    assert message.type == "PaymentProcessed"
    assert message.content_type == "application/json"
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert message.headers[H_CAUSATION_ID] == str(command.message_id)
    assert message.headers[H_SCHEMA_VERSION] == 1


async def test_redelivered_command_returns_stored_reply_and_charges_once(
    client: Client, db: AsyncEngine
) -> None:
    order_id = uid("order")
    command = new_envelope(payment(order_id, 2_500), correlation_id=uuid.uuid4())
    await client.send(command)
    await client.send(command)
    first, second = await client.replies.wait(command.message_id, count=2)

    assert first.message.body == second.message.body
    assert isinstance(first.envelope.payload, o.PaymentProcessed)
    assert await ledger_rows(db, order_id) == [("charge", 2_500)]
    async with db.connect() as conn:
        rows = await conn.scalar(
            select(func.count()).where(pay.inbox.c.message_id == command.message_id)
        )
    assert rows == 1


async def test_second_charge_for_an_order_reports_the_first(
    client: Client, db: AsyncEngine
) -> None:
    order_id = uid("order")
    first = await client.call(payment(order_id, 1_000))
    again = await client.call(payment(order_id, 9_999))  # another message id, another amount

    assert isinstance(first, o.PaymentProcessed)
    assert again == first
    assert await ledger_rows(db, order_id) == [("charge", 1_000)]


async def test_declines(client: Client, db: AsyncEngine) -> None:
    declined_card = uid("order")
    over_default = uid("order")
    over_own_limit = uid("order")
    customer = uid("customer")
    async with db.begin() as conn:
        await set_customer_limit(conn, customer, 5_000)

    assert await client.call(payment(declined_card, token="tok_declined")) == o.PaymentFailed(
        order_id=declined_card, reason=pay_rules.REASON_CARD_DECLINED
    )
    assert await client.call(payment(over_default, 500_001)) == o.PaymentFailed(
        order_id=over_default, reason=pay_rules.REASON_LIMIT_EXCEEDED
    )
    assert await client.call(payment(over_own_limit, 5_001, customer=customer)) == o.PaymentFailed(
        order_id=over_own_limit, reason=pay_rules.REASON_LIMIT_EXCEEDED
    )
    assert isinstance(
        await client.call(payment(uid("order"), 5_000, customer=customer)), o.PaymentProcessed
    )
    for order_id in (declined_card, over_default, over_own_limit):
        assert await ledger_rows(db, order_id) == []


async def test_refund_returns_what_is_left(client: Client, db: AsyncEngine) -> None:
    order_id = uid("order")
    await client.call(payment(order_id, 1_500))
    refund = o.RefundPayment(order_id=order_id)

    assert await client.call(refund) == o.PaymentRefunded(order_id=order_id, amount_cents=1_500)
    assert await client.call(refund) == o.PaymentRefunded(order_id=order_id, amount_cents=0)
    assert await ledger_rows(db, order_id) == [("charge", 1_500), ("refund", 1_500)]


async def test_refund_before_charge_voids_a_late_charge(client: Client, db: AsyncEngine) -> None:
    order_id = uid("order")
    refunded = await client.call(o.RefundPayment(order_id=order_id))
    late = await client.call(payment(order_id))

    assert refunded == o.PaymentRefunded(order_id=order_id, amount_cents=0)
    assert late == o.PaymentFailed(order_id=order_id, reason=pay_rules.REASON_VOIDED)
    assert await ledger_rows(db, order_id) == [("void", 0)]


async def test_racing_charge_and_refund_never_leave_money_taken(
    client: Client, db: AsyncEngine
) -> None:
    orders = [uid("race") for _ in range(20)]
    commands: list[Envelope[Any]] = []
    for order_id in orders:
        saga = uuid.uuid4()
        charge = new_envelope(payment(order_id, 700), correlation_id=saga)
        refund = new_envelope(o.RefundPayment(order_id=order_id), correlation_id=saga)
        commands += [charge, refund] if random.random() < 0.5 else [refund, charge]
    await asyncio.gather(*(client.send(c) for c in commands))
    await asyncio.gather(*(client.replies.wait(c.message_id, within=30) for c in commands))

    for order_id in orders:
        rows = await ledger_rows(db, order_id)
        # Charge first then a full refund, or the void marker and no charge: never money kept.
        assert rows in ([("charge", 700), ("refund", 700)], [("void", 0)])


# --- inventory ----------------------------------------------------------------------------------


async def test_reservation_is_all_or_nothing_and_release_restores(
    client: Client, db: AsyncEngine
) -> None:
    a, b = uid("sku-a"), uid("sku-b")
    async with db.begin() as conn:
        await seed_stock(conn, {a: 5, b: 1})
    order_id = uid("order")

    failed = await client.call(reserve(order_id, **{a: 2, b: 2}))
    assert isinstance(failed, o.InventoryReservationFailed)
    assert failed.reason.startswith("insufficient stock")
    async with db.connect() as conn:
        assert await stock_levels(conn, [a, b]) == {a: (5, 0), b: (1, 0)}

    assert await client.call(reserve(order_id, **{a: 2, b: 1})) == o.InventoryReserved(
        order_id=order_id
    )
    async with db.connect() as conn:
        assert await stock_levels(conn, [a, b]) == {a: (3, 2), b: (0, 1)}

    release = o.ReleaseInventory(order_id=order_id)
    assert await client.call(release) == o.InventoryReleased(order_id=order_id)
    assert await client.call(release) == o.InventoryReleased(order_id=order_id)
    async with db.connect() as conn:
        assert await stock_levels(conn, [a, b]) == {a: (5, 0), b: (1, 0)}

    late = await client.call(reserve(order_id, **{a: 1}))
    assert late == o.InventoryReservationFailed(order_id=order_id, reason="released")


async def test_reservation_of_unknown_sku_fails(client: Client) -> None:
    order_id = uid("order")
    sku = uid("ghost")
    reply = await client.call(reserve(order_id, **{sku: 1}))
    assert reply == o.InventoryReservationFailed(order_id=order_id, reason=f"unknown sku: {sku}")


async def test_release_before_reserve_fails_a_late_reservation(
    client: Client, db: AsyncEngine
) -> None:
    sku = uid("sku")
    async with db.begin() as conn:
        await seed_stock(conn, {sku: 3})
    order_id = uid("order")

    assert await client.call(o.ReleaseInventory(order_id=order_id)) == o.InventoryReleased(
        order_id=order_id
    )
    late = await client.call(reserve(order_id, **{sku: 1}))
    assert late == o.InventoryReservationFailed(order_id=order_id, reason="released")
    async with db.connect() as conn:
        assert await stock_levels(conn, [sku]) == {sku: (3, 0)}


async def test_concurrent_reservations_conserve_stock(client: Client, db: AsyncEngine) -> None:
    rng = random.Random(7)
    skus = [uid("hot") for _ in range(5)]
    async with db.begin() as conn:
        await seed_stock(conn, dict.fromkeys(skus, 10))
    orders = {uid("order"): rng.sample(skus, rng.randint(2, 4)) for _ in range(40)}
    # Lines in random order: the worker must lock in sku order regardless, or deadlock.
    reserves = [
        new_envelope(
            reserve(order_id, **{sku: rng.randint(1, 3) for sku in order_skus}),
            correlation_id=uuid.uuid4(),
        )
        for order_id, order_skus in orders.items()
    ]
    await asyncio.gather(*(client.send(e) for e in reserves))
    results = await asyncio.gather(
        *(client.replies.wait(e.message_id, within=30) for e in reserves)
    )
    reserved = [
        r.envelope.payload.order_id
        for (r,) in results
        if isinstance(r.envelope.payload, o.InventoryReserved)
    ]
    assert reserved, "some reservations must succeed"
    assert len(reserved) < len(orders), "stock is short on purpose: some must fail"

    # Release half of the orders, some reserved and some not, concurrently.
    releases = [
        new_envelope(o.ReleaseInventory(order_id=order_id), correlation_id=uuid.uuid4())
        for order_id in list(orders)[::2]
    ]
    await asyncio.gather(*(client.send(e) for e in releases))
    await asyncio.gather(*(client.replies.wait(e.message_id, within=30) for e in releases))

    async with db.connect() as conn:
        levels = await stock_levels(conn, skus)
        held = dict(
            (
                await conn.execute(
                    select(inv.reservations.c.sku, func.sum(inv.reservations.c.quantity))
                    .join(inv.orders, inv.orders.c.order_id == inv.reservations.c.order_id)
                    .where(inv.orders.c.status == "reserved", inv.reservations.c.sku.in_(skus))
                    .group_by(inv.reservations.c.sku)
                )
            ).all()
        )
    for sku in skus:
        on_hand, reserved_qty = levels[sku]
        assert on_hand + reserved_qty == 10
        assert on_hand >= 0
        assert reserved_qty == held.get(sku, 0)


# --- shipping -----------------------------------------------------------------------------------


def shipment(order_id: str, country: str = "DE") -> o.CreateShipment:
    return o.CreateShipment(
        order_id=order_id,
        ship_to=ADDRESS.model_copy(update={"country": country}),
        lines=(o.OrderLine(sku="sku-1", quantity=1),),
    )


async def shipment_row(db: AsyncEngine, order_id: str) -> tuple[Any, ...] | None:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(ship.shipments.c.status, ship.shipments.c.tracking_number).where(
                    ship.shipments.c.order_id == order_id
                )
            )
        ).first()
    return None if row is None else tuple(row)


async def test_shipment_created_then_cancelled(client: Client, db: AsyncEngine) -> None:
    order_id = uid("order")
    tracking = ship_rules.tracking_number(order_id)
    shipped = o.OrderShipped(order_id=order_id, tracking_number=tracking)

    assert await client.call(shipment(order_id, "US")) == shipped
    assert await client.call(shipment(order_id, "US")) == shipped  # another message id
    assert await shipment_row(db, order_id) == ("created", tracking)
    assert await client.call(o.CancelShipment(order_id=order_id)) == o.ShipmentCancelled(
        order_id=order_id
    )
    assert await shipment_row(db, order_id) == ("cancelled", tracking)


@pytest.mark.parametrize("country", ["AQ", "ZZ"])
async def test_unsupported_destination_fails(client: Client, db: AsyncEngine, country: str) -> None:
    order_id = uid("order")
    assert await client.call(shipment(order_id, country)) == o.ShipmentFailed(
        order_id=order_id, reason="unsupported destination"
    )
    assert await shipment_row(db, order_id) is None


async def test_cancel_before_create_fails_a_late_shipment(client: Client, db: AsyncEngine) -> None:
    order_id = uid("order")
    assert await client.call(o.CancelShipment(order_id=order_id)) == o.ShipmentCancelled(
        order_id=order_id
    )
    assert await client.call(shipment(order_id)) == o.ShipmentFailed(
        order_id=order_id, reason="cancelled"
    )
    assert await shipment_row(db, order_id) == ("cancelled", None)


# --- tracing ------------------------------------------------------------------------------------


async def test_reply_continues_the_commands_trace(client: Client) -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())  # recording spans; nothing is exported
    trace_id = uuid.uuid4().hex
    command = new_envelope(o.CancelShipment(order_id=uid("order")), correlation_id=uuid.uuid4())
    await client.send(command, traceparent=f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01")
    (reply,) = await client.replies.wait(command.message_id)

    parent = str(reply.message.headers.get("traceparent", ""))
    assert parent.split("-")[1:2] == [trace_id]
