"""Payments' pure decisions: given a ledger and a command, the outcome."""

from __future__ import annotations

import pytest

from consumers.payments import rules
from consumers.payments.rules import (
    Approved,
    Declined,
    EntryKind,
    LedgerEntry,
    OrderLedger,
    RefundDecision,
    decide_charge,
    decide_refund,
    payment_id_for,
    summarise,
)

PAY = payment_id_for("o-1")
EMPTY = OrderLedger()
CHARGED = OrderLedger(payment_id=PAY, charged_cents=1_000)
PART_REFUNDED = OrderLedger(payment_id=PAY, charged_cents=1_000, refunded_cents=400)
REFUNDED = OrderLedger(payment_id=PAY, charged_cents=1_000, refunded_cents=1_000)
VOIDED = OrderLedger(voided=True)


@pytest.mark.parametrize(
    ("ledger", "token", "amount", "limit", "expected"),
    [
        (EMPTY, "tok_visa", 1_000, 500_000, Approved(PAY, 1_000, new=True)),
        (EMPTY, "tok_visa", 0, 500_000, Approved(PAY, 0, new=True)),
        (EMPTY, "tok_visa", 500_000, 500_000, Approved(PAY, 500_000, new=True)),
        (EMPTY, "tok_visa", 500_001, 500_000, Declined(rules.REASON_LIMIT_EXCEEDED)),
        (EMPTY, "tok_declined", 1_000, 500_000, Declined(rules.REASON_CARD_DECLINED)),
        (VOIDED, "tok_visa", 1_000, 500_000, Declined(rules.REASON_VOIDED)),
        (VOIDED, "tok_declined", 1_000, 500_000, Declined(rules.REASON_VOIDED)),
        # Already charged: report the charge that exists, whatever this command says.
        (CHARGED, "tok_visa", 2_000, 500_000, Approved(PAY, 1_000, new=False)),
        (CHARGED, "tok_declined", 1_000, 0, Approved(PAY, 1_000, new=False)),
        (REFUNDED, "tok_visa", 1_000, 500_000, Approved(PAY, 1_000, new=False)),
    ],
)
def test_decide_charge(
    ledger: OrderLedger, token: str, amount: int, limit: int, expected: object
) -> None:
    decision = decide_charge(
        ledger, order_id="o-1", card_token=token, amount_cents=amount, limit_cents=limit
    )
    assert decision == expected


@pytest.mark.parametrize(
    ("ledger", "expected"),
    [
        (EMPTY, RefundDecision(0, void=True)),
        (VOIDED, RefundDecision(0, void=False)),
        (CHARGED, RefundDecision(1_000, void=False)),
        (PART_REFUNDED, RefundDecision(600, void=False)),
        (REFUNDED, RefundDecision(0, void=False)),
    ],
)
def test_decide_refund(ledger: OrderLedger, expected: RefundDecision) -> None:
    assert decide_refund(ledger) == expected


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], EMPTY),
        ([LedgerEntry(EntryKind.CHARGE, 1_000, PAY)], CHARGED),
        (
            [LedgerEntry(EntryKind.CHARGE, 1_000, PAY), LedgerEntry(EntryKind.REFUND, 400)],
            PART_REFUNDED,
        ),
        ([LedgerEntry(EntryKind.VOID, 0)], VOIDED),
    ],
)
def test_summarise(entries: list[LedgerEntry], expected: OrderLedger) -> None:
    assert summarise(entries) == expected


def test_payment_id_is_deterministic_per_order() -> None:
    assert payment_id_for("o-1") == payment_id_for("o-1")
    assert payment_id_for("o-1") != payment_id_for("o-2")
    assert len(payment_id_for("x" * 200)) <= 200
