"""Payments' command handlers: read the order's ledger, decide (rules), write the outcome."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.locks import lock_order, lock_orders
from consumers.payments import rules
from consumers.payments.tables import SCHEMA, customer_limits, ledger
from consumers.runtime import BatchHandler, Handler, HandlerMap
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
_ENTRY = insert(ledger)

# The batch forms: one statement for all the orders of a batch of charges. The reads probe the
# index once per key of the array (a LATERAL subquery that OFFSET 0 keeps from being flattened
# into a join): with `IN (...)` of 64 keys, a planner without statistics (tables never analyzed)
# prefers one sequential scan of the whole table, and a prepared statement keeps that plan.
# The keys passed must be distinct (each is one probe).
_LEDGERS = text(
    "SELECT l.order_id, l.kind, l.amount_cents, l.payment_id"
    " FROM unnest(CAST(:order_ids AS text[])) AS k(order_id) CROSS JOIN LATERAL"
    f" (SELECT order_id, kind, amount_cents, payment_id, entry_id FROM {SCHEMA}.ledger"
    " WHERE order_id = k.order_id OFFSET 0) AS l"
    " ORDER BY l.entry_id"
)
_LIMITS = text(
    "SELECT l.customer_id, l.limit_cents"
    " FROM unnest(CAST(:customer_ids AS text[])) AS k(customer_id) CROSS JOIN LATERAL"
    f" (SELECT customer_id, limit_cents FROM {SCHEMA}.customer_limits"
    " WHERE customer_id = k.customer_id OFFSET 0) AS l"
)
_CHARGES = text(
    f"INSERT INTO {SCHEMA}.ledger"
    " (order_id, kind, amount_cents, payment_id, customer_id, currency, message_id)"
    " SELECT o, 'charge', a, p, c, cur, m FROM unnest(CAST(:order_ids AS text[]),"
    " CAST(:amounts AS bigint[]), CAST(:payment_ids AS text[]), CAST(:customer_ids AS text[]),"
    " CAST(:currencies AS text[]), CAST(:message_ids AS uuid[])) AS t(o, a, p, c, cur, m)"
)


async def load_ledger(conn: AsyncConnection, order_id: str) -> rules.OrderLedger:
    rows = await conn.execute(_LEDGER, {"order_id": order_id})
    return rules.summarise(
        rules.LedgerEntry(rules.EntryKind(kind), amount, payment_id)
        for kind, amount, payment_id in rows
    )


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

    async def process_payments(
        conn: AsyncConnection, envelopes: Sequence[Envelope[ProcessPayment]]
    ) -> list[ReplyEvent]:
        """Charges for distinct orders: lock, read, decide each, write the new charges."""
        commands = [envelope.payload for envelope in envelopes]
        order_ids = [command.order_id for command in commands]
        # Serialise with a racing RefundPayment for the same order (see consumers.locks).
        await lock_orders(conn, SCHEMA, order_ids)
        entries: dict[str, list[rules.LedgerEntry]] = {order_id: [] for order_id in order_ids}
        for order_id, kind, amount, payment_id in await conn.execute(
            _LEDGERS, {"order_ids": sorted(set(order_ids))}
        ):
            entries[order_id].append(rules.LedgerEntry(rules.EntryKind(kind), amount, payment_id))
        limits: dict[str, int] = dict(
            (
                await conn.execute(
                    _LIMITS, {"customer_ids": sorted({c.customer_id for c in commands})}
                )
            ).all()
        )
        replies: list[ReplyEvent] = []
        charges: list[tuple[Envelope[ProcessPayment], rules.Approved]] = []
        for envelope, command in zip(envelopes, commands, strict=True):
            decision = rules.decide_charge(
                rules.summarise(entries[command.order_id]),
                order_id=command.order_id,
                card_token=command.card_token,
                amount_cents=command.amount_cents,
                limit_cents=int(limits.get(command.customer_id, default_limit)),
            )
            if isinstance(decision, rules.Declined):
                replies.append(PaymentFailed(order_id=command.order_id, reason=decision.reason))
                continue
            if decision.new:
                charges.append((envelope, decision))
            replies.append(
                PaymentProcessed(
                    order_id=command.order_id,
                    payment_id=decision.payment_id,
                    amount_cents=decision.amount_cents,
                )
            )
        if charges:
            await conn.execute(
                _CHARGES,
                {
                    "order_ids": [e.payload.order_id for e, _ in charges],
                    "amounts": [d.amount_cents for _, d in charges],
                    "payment_ids": [d.payment_id for _, d in charges],
                    "customer_ids": [e.payload.customer_id for e, _ in charges],
                    "currencies": [e.payload.currency for e, _ in charges],
                    "message_ids": [e.message_id for e, _ in charges],
                },
            )
        return replies

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

    handlers: dict[type[Command], Handler | BatchHandler] = {
        ProcessPayment: BatchHandler(key=_order_of, run=process_payments),
        RefundPayment: refund_payment,
    }
    return handlers


def _order_of(envelope: Envelope[ProcessPayment]) -> str:
    return envelope.payload.order_id


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
