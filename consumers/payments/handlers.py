"""Payments' command handlers: read the order's ledger, decide (rules), write the outcome."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.locks import lock_order
from consumers.payments import rules
from consumers.payments.tables import SCHEMA, customer_limits, ledger
from consumers.runtime import Handler, HandlerMap
from consumers.settings import WorkerSettings
from contracts.base import Command, ReplyEvent
from contracts.envelope import Envelope
from contracts.order import (
    PaymentFailed,
    PaymentProcessed,
    PaymentRefunded,
    ProcessPayment,
    RefundPayment,
)

# Built once: the hot path then skips building the statement and its cache key per command.
_LEDGER = (
    select(ledger.c.kind, ledger.c.amount_cents, ledger.c.payment_id)
    .where(ledger.c.order_id == bindparam("order_id"))
    .order_by(ledger.c.entry_id)
)
_LIMIT = select(customer_limits.c.limit_cents).where(
    customer_limits.c.customer_id == bindparam("customer_id")
)
_ENTRY = insert(ledger)


async def load_ledger(conn: AsyncConnection, order_id: str) -> rules.OrderLedger:
    rows = await conn.execute(_LEDGER, {"order_id": order_id})
    return rules.summarise(
        rules.LedgerEntry(rules.EntryKind(kind), amount, payment_id)
        for kind, amount, payment_id in rows
    )


async def customer_limit(conn: AsyncConnection, customer_id: str, default_cents: int) -> int:
    limit = await conn.scalar(_LIMIT, {"customer_id": customer_id})
    return default_cents if limit is None else int(limit)


async def set_customer_limit(conn: AsyncConnection, customer_id: str, limit_cents: int) -> None:
    """Demo and test helper: give one customer a limit other than the default."""
    statement = pg_insert(customer_limits).values(customer_id=customer_id, limit_cents=limit_cents)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[customer_limits.c.customer_id],
            set_={"limit_cents": statement.excluded.limit_cents},
        )
    )


def make_handlers(config: WorkerSettings) -> HandlerMap:
    default_limit = config.payments_default_limit_cents

    async def process_payment(
        conn: AsyncConnection, envelope: Envelope[ProcessPayment]
    ) -> ReplyEvent:
        command = envelope.payload
        # Serialise with a racing RefundPayment for the same order (see consumers.locks).
        await lock_order(conn, SCHEMA, command.order_id)
        decision = rules.decide_charge(
            await load_ledger(conn, command.order_id),
            order_id=command.order_id,
            card_token=command.card_token,
            amount_cents=command.amount_cents,
            limit_cents=await customer_limit(conn, command.customer_id, default_limit),
        )
        if isinstance(decision, rules.Declined):
            return PaymentFailed(order_id=command.order_id, reason=decision.reason)
        if decision.new:
            await conn.execute(
                _ENTRY,
                {
                    "order_id": command.order_id,
                    "kind": rules.EntryKind.CHARGE.value,
                    "amount_cents": decision.amount_cents,
                    "payment_id": decision.payment_id,
                    "customer_id": command.customer_id,
                    "currency": command.currency,
                    "message_id": envelope.message_id,
                },
            )
        return PaymentProcessed(
            order_id=command.order_id,
            payment_id=decision.payment_id,
            amount_cents=decision.amount_cents,
        )

    async def refund_payment(
        conn: AsyncConnection, envelope: Envelope[RefundPayment]
    ) -> ReplyEvent:
        order_id = envelope.payload.order_id
        await lock_order(conn, SCHEMA, order_id)
        decision = rules.decide_refund(await load_ledger(conn, order_id))
        if decision.amount_cents > 0:
            await _entry(conn, envelope, rules.EntryKind.REFUND, decision.amount_cents)
        if decision.void:
            await _entry(conn, envelope, rules.EntryKind.VOID, 0)
        return PaymentRefunded(order_id=order_id, amount_cents=decision.amount_cents)

    handlers: dict[type[Command], Handler] = {
        ProcessPayment: process_payment,
        RefundPayment: refund_payment,
    }
    return handlers


async def _entry(
    conn: AsyncConnection, envelope: Envelope[RefundPayment], kind: rules.EntryKind, amount: int
) -> None:
    await conn.execute(
        _ENTRY,
        {
            "order_id": envelope.payload.order_id,
            "kind": kind.value,
            "amount_cents": amount,
            "message_id": envelope.message_id,
        },
    )
