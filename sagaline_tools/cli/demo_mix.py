"""The sample orders `sagaline demo order` publishes, and the final state each must reach.

Pure and deterministic for a given run tag, so tests can check the mix without a broker. Each
run uses SKUs of its own: stock seeded by an earlier run, or a concurrent one, cannot change
this run's outcomes whether the inventory seeding sets or adds quantities.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from contracts.order import Address, OrderCancellationRequested, OrderLine, OrderSubmitted

_DEMO_NAMESPACE = uuid.UUID("5a6a11e0-de30-4b1e-9d7c-000000000001")

# Order business rules the workers implement (see consumers/): these values trigger them.
DECLINED_CARD = "tok_declined"
GOOD_CARD = "tok_visa"
UNSUPPORTED_COUNTRY = "AQ"


class Scenario(StrEnum):
    SUCCESS = "success"
    PAYMENT_DECLINED = "payment-declined"
    OUT_OF_STOCK = "out-of-stock"
    UNSUPPORTED_DESTINATION = "unsupported-destination"
    CANCELLED = "cancelled-by-customer"


EXPECTED_STATE: dict[Scenario, str] = {
    Scenario.SUCCESS: "completed",
    Scenario.PAYMENT_DECLINED: "failed",
    Scenario.OUT_OF_STOCK: "failed",
    Scenario.UNSUPPORTED_DESTINATION: "failed",
    Scenario.CANCELLED: "cancelled",
}

# The mix cycles in this order, so any count >= 5 covers every outcome at least once.
MIX: tuple[Scenario, ...] = (
    Scenario.SUCCESS,
    Scenario.PAYMENT_DECLINED,
    Scenario.OUT_OF_STOCK,
    Scenario.UNSUPPORTED_DESTINATION,
    Scenario.CANCELLED,
)

FINAL_STATES = frozenset({"completed", "failed", "cancelled", "compensation_failed", "aborted"})
"""The order workflow's final states; a saga row's finished_at also marks one as final."""


@dataclass(frozen=True)
class DemoOrder:
    index: int
    scenario: Scenario
    saga_id: uuid.UUID
    submitted: OrderSubmitted
    cancellation: OrderCancellationRequested | None = None

    @property
    def order_id(self) -> str:
        return self.submitted.order_id

    @property
    def expected_state(self) -> str:
        return EXPECTED_STATE[self.scenario]

    @property
    def events(self) -> tuple[OrderSubmitted | OrderCancellationRequested, ...]:
        """In publish order. The cancellation goes first so the outcome does not depend on
        how far the saga got before it arrived (it ends cancelled either way)."""
        if self.cancellation is None:
            return (self.submitted,)
        return (self.cancellation, self.submitted)


@dataclass(frozen=True)
class DemoPlan:
    run_tag: str
    orders: tuple[DemoOrder, ...]
    stock: dict[str, int]
    """Quantities to seed before publishing: enough for every order that may reserve."""


def skus(run_tag: str) -> tuple[str, str]:
    """(in stock, sold out) SKUs for one run."""
    return f"demo-{run_tag}-widget", f"demo-{run_tag}-sold-out"


def build_orders(count: int, run_tag: str) -> DemoPlan:
    if count < 1:
        raise ValueError("count must be at least 1")
    in_stock, sold_out = skus(run_tag)
    orders = tuple(_order(index, MIX[index % len(MIX)], run_tag) for index in range(count))
    # Exactly what all orders on the in-stock SKU could hold at once: even if every reservation
    # is outstanding together (failed shipments release theirs later), none runs short.
    demand = sum(
        line.quantity for order in orders for line in order.submitted.lines if line.sku == in_stock
    )
    return DemoPlan(run_tag=run_tag, orders=orders, stock={in_stock: demand, sold_out: 0})


def _order(index: int, scenario: Scenario, run_tag: str) -> DemoOrder:
    in_stock, sold_out = skus(run_tag)
    quantity = 1 + index % 3
    sku = sold_out if scenario is Scenario.OUT_OF_STOCK else in_stock
    country = UNSUPPORTED_COUNTRY if scenario is Scenario.UNSUPPORTED_DESTINATION else "DE"
    order_id = f"demo-{run_tag}-{index + 1:04d}"
    submitted = OrderSubmitted(
        order_id=order_id,
        customer_id=f"demo-customer-{index % 7 + 1}",
        amount_cents=1250 * quantity,
        currency="EUR",
        card_token=DECLINED_CARD if scenario is Scenario.PAYMENT_DECLINED else GOOD_CARD,
        lines=(OrderLine(sku=sku, quantity=quantity),),
        ship_to=_address(country),
    )
    cancellation = (
        OrderCancellationRequested(order_id=order_id, reason="customer changed their mind")
        if scenario is Scenario.CANCELLED
        else None
    )
    return DemoOrder(
        index=index,
        scenario=scenario,
        saga_id=uuid.uuid5(_DEMO_NAMESPACE, f"{run_tag}:{index}"),
        submitted=submitted,
        cancellation=cancellation,
    )


def _address(country: str) -> Address:
    if country == UNSUPPORTED_COUNTRY:
        return Address(country=country, postcode="BQ 1010", city="McMurdo Station")
    return Address(country=country, postcode="10115", city="Berlin")
