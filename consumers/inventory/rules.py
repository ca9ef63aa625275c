"""Inventory decisions, without I/O: all-or-nothing reservations and their release."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from contracts.order import OrderLine

REASON_UNKNOWN_SKU = "unknown sku"
REASON_INSUFFICIENT = "insufficient stock"
REASON_RELEASED = "released"
"""The order's inventory was released (compensated) first: a late reservation must fail."""

_REASON_LIMIT = 200  # ShortText


class OrderStatus(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"


def requested_quantities(lines: Iterable[OrderLine]) -> dict[str, int]:
    """Quantity per sku, in sku order (the order stock rows are locked in); repeats are summed."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return dict(sorted(totals.items()))


@dataclass(frozen=True)
class Reserve:
    quantities: Mapping[str, int]


@dataclass(frozen=True)
class AlreadyReserved:
    pass


@dataclass(frozen=True)
class Reject:
    reason: str


ReservationDecision = Reserve | AlreadyReserved | Reject


def decide_reservation(
    status: OrderStatus | None, requested: Mapping[str, int], on_hand: Mapping[str, int]
) -> ReservationDecision:
    """`on_hand` has the available quantity of every requested sku that exists."""
    if status is OrderStatus.RESERVED:
        return AlreadyReserved()
    if status is OrderStatus.RELEASED:
        return Reject(REASON_RELEASED)
    unknown = [sku for sku in requested if sku not in on_hand]
    if unknown:
        return Reject(_reason(REASON_UNKNOWN_SKU, unknown))
    short = [sku for sku, quantity in requested.items() if on_hand[sku] < quantity]
    if short:
        return Reject(_reason(REASON_INSUFFICIENT, short))
    return Reserve(dict(requested))


@dataclass(frozen=True)
class ReleaseDecision:
    restore: bool
    """Move the order's reserved quantities back to on hand."""
    mark: bool
    """Record the order as released (a late reservation then fails)."""


def decide_release(status: OrderStatus | None) -> ReleaseDecision:
    if status is OrderStatus.RESERVED:
        return ReleaseDecision(restore=True, mark=True)
    if status is OrderStatus.RELEASED:
        return ReleaseDecision(restore=False, mark=False)
    return ReleaseDecision(restore=False, mark=True)


def _reason(prefix: str, skus: list[str]) -> str:
    text = f"{prefix}: {', '.join(skus)}"
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."
