"""The order workflow: payment -> inventory -> shipping, with LIFO compensation.

Amounts are integer minor units (cents) so that no float or decimal rounding crosses the wire.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from contracts.base import Code, Command, Currency, Event, ReplyEvent, ShortText

Quantity = Annotated[int, Field(ge=1, le=10_000)]
AmountCents = Annotated[int, Field(ge=0, le=10_000_000_000)]


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    sku: ShortText
    quantity: Quantity


class Address(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    country: Code
    postcode: ShortText
    city: ShortText


Lines = Annotated[tuple[OrderLine, ...], Field(min_length=1, max_length=100)]


# --- events from the shop (start and cancel) -------------------------------------------------


class OrderSubmitted(Event):
    order_id: ShortText
    customer_id: ShortText
    amount_cents: AmountCents
    currency: Currency
    card_token: ShortText
    lines: Lines
    ship_to: Address


class OrderCancellationRequested(Event):
    order_id: ShortText
    reason: ShortText


# --- events the orchestrator publishes for other services -------------------------------------


class OrderCompleted(Event):
    order_id: ShortText
    tracking_number: ShortText


class OrderFailed(Event):
    order_id: ShortText
    outcome: ShortText
    reason: ShortText


# --- commands and their replies ---------------------------------------------------------------


class ProcessPayment(Command):
    order_id: ShortText
    customer_id: ShortText
    amount_cents: AmountCents
    currency: Currency
    card_token: ShortText


class PaymentProcessed(ReplyEvent):
    order_id: ShortText
    payment_id: ShortText
    amount_cents: AmountCents


class PaymentFailed(ReplyEvent):
    order_id: ShortText
    reason: ShortText


class RefundPayment(Command):
    order_id: ShortText


class PaymentRefunded(ReplyEvent):
    order_id: ShortText
    amount_cents: AmountCents


class ReserveInventory(Command):
    order_id: ShortText
    lines: Lines


class InventoryReserved(ReplyEvent):
    order_id: ShortText


class InventoryReservationFailed(ReplyEvent):
    order_id: ShortText
    reason: ShortText


class ReleaseInventory(Command):
    order_id: ShortText


class InventoryReleased(ReplyEvent):
    order_id: ShortText


class CreateShipment(Command):
    order_id: ShortText
    ship_to: Address
    lines: Lines


class OrderShipped(ReplyEvent):
    order_id: ShortText
    tracking_number: ShortText


class ShipmentFailed(ReplyEvent):
    order_id: ShortText
    reason: ShortText


class CancelShipment(Command):
    order_id: ShortText


class ShipmentCancelled(ReplyEvent):
    order_id: ShortText
