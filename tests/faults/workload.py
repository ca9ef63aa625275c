"""What the fault scenarios send: orders with known outcomes, and a shop that publishes them.

Every order's expected final state(s) follow from its case alone (card, sku, destination,
cancellation), never from timing, so the checker can hold each saga to its outcome. Each
scenario gets its own skus, so stock conservation is checked on stock nobody else touches.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.exceptions import DeliveryError
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from sagaline.messaging import nodes
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings

COMPLETED = frozenset({"completed"})
FAILED = frozenset({"failed"})
CANCELLED = frozenset({"cancelled"})


@dataclass(frozen=True)
class Case:
    kind: str
    states: frozenset[str]
    card: str = "tok_ok"
    in_stock: bool = True
    country: str = "DE"
    cancel_first: bool = False
    """Publish the customer's cancellation before the order (it may overtake it or not)."""


SUCCESS = Case("success", COMPLETED)
DECLINED = Case("declined", FAILED, card="tok_declined")
OUT_OF_STOCK = Case("out-of-stock", FAILED, in_stock=False)
UNSHIPPABLE = Case("unsupported-destination", FAILED, country="AQ")
CANCELLED_EARLY = Case("cancelled", CANCELLED, cancel_first=True)

MIX: tuple[Case, ...] = (SUCCESS,) * 6 + (DECLINED, OUT_OF_STOCK, UNSHIPPABLE, CANCELLED_EARLY)
"""Ten orders: six succeed, three fail at each step (one compensates two steps), one cancelled."""

PLENTY = 1_000_000


@dataclass
class Order:
    saga_id: uuid.UUID
    case: Case
    submitted: Envelope[o.OrderSubmitted]
    inputs: list[Envelope[Any]] = field(default_factory=list)
    """Every valid message published for this saga by the test (the orchestrator's inputs)."""
    states: frozenset[str] = frozenset()

    @property
    def order_id(self) -> str:
        return self.submitted.payload.order_id

    @property
    def amount_cents(self) -> int:
        return self.submitted.payload.amount_cents

    def cancellation(self, reason: str = "changed mind") -> Envelope[o.OrderCancellationRequested]:
        return new_envelope(
            o.OrderCancellationRequested(order_id=self.order_id, reason=reason),
            correlation_id=self.saga_id,
        )


class Workload:
    def __init__(self, tag: str, *, secret: str | None = None) -> None:
        self.tag = tag
        self.plenty = f"{tag}-sku-plenty"
        self.none_left = f"{tag}-sku-none"
        self.stock = {self.plenty: PLENTY, self.none_left: 0}
        self.orders: list[Order] = []
        self.secret = secret
        """Put into payload fields of every order: the log scan looks for it."""

    def make(self, count: int, mix: Iterable[Case] = MIX) -> list[Order]:
        cases = list(mix)
        made = []
        for i in range(count):
            case = cases[i % len(cases)]
            index = len(self.orders)
            saga_id = uuid.uuid4()
            marker = f"-{self.secret}" if self.secret else ""
            submitted = new_envelope(
                o.OrderSubmitted(
                    order_id=f"{self.tag}-{index}-{saga_id.hex[:8]}",
                    customer_id=f"customer-{index % 7}{marker}",
                    amount_cents=1_000 + index,
                    currency="EUR",
                    card_token=case.card,
                    lines=(
                        o.OrderLine(
                            sku=self.plenty if case.in_stock else self.none_left,
                            quantity=1 + index % 3,
                        ),
                    ),
                    ship_to=o.Address(
                        country=case.country, postcode=f"10115{marker}", city="Berlin"
                    ),
                ),
                correlation_id=saga_id,
            )
            order = Order(saga_id, case, submitted, states=case.states)
            if case.cancel_first:
                order.inputs.append(order.cancellation())
            order.inputs.append(submitted)
            self.orders.append(order)
            made.append(order)
        return made

    def by_saga(self) -> dict[uuid.UUID, Order]:
        return {order.saga_id: order for order in self.orders}

    async def seed(self, engine: AsyncEngine) -> None:
        from consumers.inventory.handlers import seed_stock

        async with engine.begin() as conn:
            await seed_stock(conn, self.stock)


class Shop:
    """Publishes with publisher confirms; `reliably` re-sends (same message id) until confirmed.

    While the broker is away a publish fails; the shop then waits and sends the same envelope
    again, as a real service with an outbox would. Duplicates that result are the consumers'
    inboxes' business.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.published = 0
        self.failed_attempts = 0
        self.renewed_channels = 0

    async def __aenter__(self) -> Shop:
        self.connection = await nodes.connect_robust(self.settings.amqp_url, reconnect_interval=0.5)
        self.channel = await self.connection.channel(publisher_confirms=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def publish(self, envelope: Envelope[Any], copies: int = 1) -> None:
        assert self.channel is not None
        for _ in range(copies):
            await publish_envelope(self.channel, self.settings.topology.events_exchange, envelope)
            self.published += 1

    async def reliably(self, envelope: Envelope[Any], within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while True:
                try:
                    async with asyncio.timeout(5):
                        await self.publish(envelope)
                    return
                except Exception as exc:
                    self.failed_attempts += 1
                    if isinstance(exc, DeliveryError) and self.connection is not None:
                        # A refused publish (nack): send the next attempt on a new channel.
                        self.channel = await self.connection.channel(publisher_confirms=True)
                        self.renewed_channels += 1
                    await asyncio.sleep(0.2)

    async def send(self, orders: Iterable[Order], *, reliably: bool = False) -> None:
        for order in orders:
            for envelope in order.inputs:
                if reliably:
                    await self.reliably(envelope)
                else:
                    await self.publish(envelope)
