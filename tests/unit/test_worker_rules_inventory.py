"""Inventory's pure decisions: all-or-nothing reservations and once-only releases."""

from __future__ import annotations

import pytest

from consumers.inventory import rules
from consumers.inventory.rules import (
    AlreadyReserved,
    OrderStatus,
    Reject,
    ReleaseDecision,
    Reserve,
    decide_release,
    decide_reservation,
    requested_quantities,
)
from contracts.order import OrderLine

RESERVED = OrderStatus.RESERVED
RELEASED = OrderStatus.RELEASED


def test_requested_quantities_sums_repeats_in_sku_order() -> None:
    lines = [OrderLine(sku="b", quantity=2), OrderLine(sku="a", quantity=1)]
    lines.append(OrderLine(sku="b", quantity=3))
    assert list(requested_quantities(lines).items()) == [("a", 1), ("b", 5)]


def test_requested_quantities_uses_code_point_order() -> None:
    # The same order as COLLATE "C" in the lock query: upper case before lower case.
    lines = [OrderLine(sku=s, quantity=1) for s in ("b", "B", "a", "A-2", "A_1")]
    assert list(requested_quantities(lines)) == ["A-2", "A_1", "B", "a", "b"]


@pytest.mark.parametrize(
    ("status", "requested", "on_hand", "expected"),
    [
        (None, {"a": 2}, {"a": 2}, Reserve({"a": 2})),
        (None, {"a": 1, "b": 1}, {"a": 5, "b": 1}, Reserve({"a": 1, "b": 1})),
        (None, {"a": 3}, {"a": 2}, Reject(f"{rules.REASON_INSUFFICIENT}: a")),
        # All or nothing: one short line fails the whole order.
        (None, {"a": 1, "b": 2}, {"a": 5, "b": 1}, Reject(f"{rules.REASON_INSUFFICIENT}: b")),
        (None, {"a": 1, "x": 1}, {"a": 5}, Reject(f"{rules.REASON_UNKNOWN_SKU}: x")),
        (None, {"x": 1, "y": 1}, {}, Reject(f"{rules.REASON_UNKNOWN_SKU}: x, y")),
        (RESERVED, {"a": 1}, {}, AlreadyReserved()),
        (RELEASED, {"a": 1}, {"a": 5}, Reject(rules.REASON_RELEASED)),
    ],
)
def test_decide_reservation(
    status: OrderStatus | None,
    requested: dict[str, int],
    on_hand: dict[str, int],
    expected: object,
) -> None:
    assert decide_reservation(status, requested, on_hand) == expected


def test_reject_reason_fits_the_contract() -> None:
    requested = {f"sku-{i:03d}-{'x' * 40}": 1 for i in range(20)}
    decision = decide_reservation(None, requested, {})
    assert isinstance(decision, Reject)
    assert len(decision.reason) <= 200
    assert decision.reason.startswith(rules.REASON_UNKNOWN_SKU)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, ReleaseDecision(restore=False, mark=True)),
        (RESERVED, ReleaseDecision(restore=True, mark=True)),
        (RELEASED, ReleaseDecision(restore=False, mark=False)),
    ],
)
def test_decide_release(status: OrderStatus | None, expected: ReleaseDecision) -> None:
    assert decide_release(status) == expected
