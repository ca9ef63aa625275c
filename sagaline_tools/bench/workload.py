"""The orders a run publishes: all on the success path, spread over customers and skus."""

from __future__ import annotations

import uuid
from typing import Any

from contracts import order
from contracts.envelope import Envelope, new_envelope
from contracts.ids import uuid7

SKUS = 100
"""Distinct skus: reservations of one hot stock row would serialise on its lock."""
CUSTOMERS = 1_000
GOOD_CARD = "tok_visa"


def sku(index: int) -> str:
    return f"bench-sku-{index % SKUS:03d}"


def order_id(run_tag: str, index: int) -> str:
    return f"bench-{run_tag}-{index:07d}"


def submitted(run_tag: str, index: int) -> order.OrderSubmitted:
    return order.OrderSubmitted(
        order_id=order_id(run_tag, index),
        customer_id=f"bench-customer-{index % CUSTOMERS:04d}",
        amount_cents=1_250 + index % 100,
        currency="EUR",
        card_token=GOOD_CARD,
        lines=(order.OrderLine(sku=sku(index), quantity=1),),
        ship_to=order.Address(country="DE", postcode="10115", city="Berlin"),
    )


def order_envelope(run_tag: str, index: int, *, random_ids: bool = False) -> Envelope[Any]:
    """An order's starting event, with version 7 ids as the README advises publishers, or with
    random (version 4) ones as a publisher that ignores the advice sends (`--random-ids`)."""
    if random_ids:
        return new_envelope(
            submitted(run_tag, index), correlation_id=uuid.uuid4(), message_id=uuid.uuid4()
        )
    return new_envelope(submitted(run_tag, index), correlation_id=uuid7())


def stock_for(count: int) -> dict[str, int]:
    """Enough of every sku for `count` orders (each takes one of `sku(index)`)."""
    per_sku = -(-count // SKUS)
    return {sku(i): per_sku + 1 for i in range(min(count, SKUS))}
