"""Helpers for integration tests: order events, a movable clock, database access."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from orchestrator.engine import Incoming
from orchestrator.store.tables import instances


class FakeClock:
    """An injected clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def order_submitted(
    saga_id: uuid.UUID | None = None,
    *,
    card_token: str = "tok_ok",
    sku: str = "sku-1",
    quantity: int = 1,
    country: str = "DE",
    amount_cents: int = 1_000,
) -> Envelope[o.OrderSubmitted]:
    saga_id = saga_id or uuid.uuid4()
    return new_envelope(
        o.OrderSubmitted(
            order_id=f"order-{saga_id}",
            customer_id="customer-1",
            amount_cents=amount_cents,
            currency="EUR",
            card_token=card_token,
            lines=(o.OrderLine(sku=sku, quantity=quantity),),
            ship_to=o.Address(country=country, postcode="10115", city="Berlin"),
        ),
        correlation_id=saga_id,
    )


def reply(payload: Any, saga_id: uuid.UUID, command_id: uuid.UUID) -> Incoming:
    """A worker's reply to the command with message id `command_id`."""
    envelope = new_envelope(payload, correlation_id=saga_id, causation_id=command_id)
    return Incoming.from_envelope(envelope)


async def sagas_with_key(engine: AsyncEngine, business_key: str) -> int:
    """How many sagas hold `business_key` (a second start must not make another)."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(instances)
            .where(instances.c.business_key == business_key)
        )
    return int(count or 0)
