"""Shipping's pure decisions."""

from __future__ import annotations

import pytest

from consumers.shipping import rules
from consumers.shipping.rules import (
    CancelAction,
    Refuse,
    Ship,
    Shipment,
    ShipmentStatus,
    decide_cancel,
    decide_shipment,
    tracking_number,
)

TRACK = tracking_number("o-1")
CREATED = Shipment(ShipmentStatus.CREATED, TRACK)
CANCELLED_MARKER = Shipment(ShipmentStatus.CANCELLED, None)
CANCELLED = Shipment(ShipmentStatus.CANCELLED, TRACK)


@pytest.mark.parametrize(
    ("existing", "country", "expected"),
    [
        (None, "US", Ship(TRACK, new=True)),
        (None, "JP", Ship(TRACK, new=True)),
        (None, "AQ", Refuse(rules.REASON_UNSUPPORTED)),
        (None, "ZZ", Refuse(rules.REASON_UNSUPPORTED)),
        (CREATED, "US", Ship(TRACK, new=False)),
        (CREATED, "ZZ", Ship(TRACK, new=False)),
        (CANCELLED_MARKER, "US", Refuse(rules.REASON_CANCELLED)),
        (CANCELLED, "US", Refuse(rules.REASON_CANCELLED)),
    ],
)
def test_decide_shipment(existing: Shipment | None, country: str, expected: object) -> None:
    assert decide_shipment(existing, order_id="o-1", country=country) == expected


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (None, CancelAction.MARK),
        (CREATED, CancelAction.CANCEL),
        (CANCELLED, CancelAction.NOTHING),
        (CANCELLED_MARKER, CancelAction.NOTHING),
    ],
)
def test_decide_cancel(existing: Shipment | None, expected: CancelAction) -> None:
    assert decide_cancel(existing) == expected


def test_supported_countries_are_documented_set() -> None:
    expected = {"US", "CA", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "JP", "AU"}
    assert expected == rules.SUPPORTED_COUNTRIES


def test_tracking_number_is_deterministic() -> None:
    assert tracking_number("o-1") == TRACK
    assert tracking_number("o-2") != TRACK
    assert TRACK.startswith("SL")
    assert len(TRACK) == 18
