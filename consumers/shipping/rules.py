"""Shipping decisions, without I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

SUPPORTED_COUNTRIES = frozenset({"US", "CA", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "JP", "AU"})
"""Destinations the carrier serves; anything else (e.g. "AQ", "ZZ") fails the shipment."""

REASON_UNSUPPORTED = "unsupported destination"
REASON_CANCELLED = "cancelled"
"""The shipment was cancelled (compensated) before it was created: a late create must fail."""

_TRACKING = uuid.UUID("3b0c9f52-6d1e-4b8a-8e2f-5a7d4c91b6e0")


class ShipmentStatus(StrEnum):
    CREATED = "created"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Shipment:
    status: ShipmentStatus
    tracking_number: str | None


def tracking_number(order_id: str) -> str:
    """Deterministic from the order id: a re-sent create always reports the same number."""
    return "SL" + uuid.uuid5(_TRACKING, order_id).hex[:16].upper()


@dataclass(frozen=True)
class Ship:
    tracking_number: str
    new: bool


@dataclass(frozen=True)
class Refuse:
    reason: str


ShipmentDecision = Ship | Refuse


def decide_shipment(existing: Shipment | None, *, order_id: str, country: str) -> ShipmentDecision:
    if existing is not None and existing.status is ShipmentStatus.CANCELLED:
        return Refuse(REASON_CANCELLED)
    if existing is not None:
        return Ship(existing.tracking_number or tracking_number(order_id), new=False)
    if country not in SUPPORTED_COUNTRIES:
        return Refuse(REASON_UNSUPPORTED)
    return Ship(tracking_number(order_id), new=True)


class CancelAction(StrEnum):
    CANCEL = "cancel"
    """Mark the created shipment cancelled."""
    MARK = "mark"
    """No shipment yet: record a cancelled marker so a late create fails."""
    NOTHING = "nothing"


def decide_cancel(existing: Shipment | None) -> CancelAction:
    if existing is None:
        return CancelAction.MARK
    if existing.status is ShipmentStatus.CREATED:
        return CancelAction.CANCEL
    return CancelAction.NOTHING
