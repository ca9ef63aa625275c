"""Payment decisions, without I/O: what a charge or a refund does to one order's ledger.

Amounts are integer cents. One order has at most one charge; refunds never exceed it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

DECLINED_CARD_TOKEN = "tok_declined"
"""The documented test card token that the payment provider always declines."""

REASON_CARD_DECLINED = "card declined"
REASON_LIMIT_EXCEEDED = "amount exceeds the customer's limit"
REASON_VOIDED = "voided"
"""The order was refunded (compensated) before any charge: it must never be charged afterwards."""

_PAYMENT_IDS = uuid.UUID("8f6d2c1e-0b7a-4f35-9a57-3c1f0e6b2a91")


class EntryKind(StrEnum):
    CHARGE = "charge"
    REFUND = "refund"
    VOID = "void"
    """A zero-amount marker: a refund arrived before any charge."""


@dataclass(frozen=True)
class LedgerEntry:
    kind: EntryKind
    amount_cents: int
    payment_id: str | None = None


@dataclass(frozen=True)
class OrderLedger:
    """What one order's ledger entries add up to."""

    payment_id: str | None = None
    charged_cents: int = 0
    refunded_cents: int = 0
    voided: bool = False

    @property
    def charged(self) -> bool:
        return self.payment_id is not None


def summarise(entries: Iterable[LedgerEntry]) -> OrderLedger:
    payment_id: str | None = None
    charged = refunded = 0
    voided = False
    for entry in entries:
        if entry.kind is EntryKind.CHARGE:
            payment_id = entry.payment_id
            charged += entry.amount_cents
        elif entry.kind is EntryKind.REFUND:
            refunded += entry.amount_cents
        else:
            voided = True
    return OrderLedger(payment_id, charged, refunded, voided)


def payment_id_for(order_id: str) -> str:
    """Deterministic: one order has one charge, so its id can follow from the order id."""
    return f"pay_{uuid.uuid5(_PAYMENT_IDS, order_id).hex}"


@dataclass(frozen=True)
class Approved:
    payment_id: str
    amount_cents: int
    new: bool
    """False when the order was already charged: nothing is written, the charge is reported."""


@dataclass(frozen=True)
class Declined:
    reason: str


ChargeDecision = Approved | Declined


def decide_charge(
    ledger: OrderLedger, *, order_id: str, card_token: str, amount_cents: int, limit_cents: int
) -> ChargeDecision:
    # An existing charge wins over everything: a second ProcessPayment for the order (a new saga
    # attempt with another message id) must report the charge, never make another one.
    if ledger.payment_id is not None:
        return Approved(ledger.payment_id, ledger.charged_cents, new=False)
    if ledger.voided:
        return Declined(REASON_VOIDED)
    if card_token == DECLINED_CARD_TOKEN:
        return Declined(REASON_CARD_DECLINED)
    if amount_cents > limit_cents:
        return Declined(REASON_LIMIT_EXCEEDED)
    return Approved(payment_id_for(order_id), amount_cents, new=True)


@dataclass(frozen=True)
class RefundDecision:
    amount_cents: int
    """What is still charged and not yet refunded (0 when nothing is)."""
    void: bool
    """Write the void marker: nothing was charged yet, so a late charge must be declined."""


def decide_refund(ledger: OrderLedger) -> RefundDecision:
    outstanding = max(ledger.charged_cents - ledger.refunded_cents, 0)
    return RefundDecision(outstanding, void=not ledger.charged and not ledger.voided)
