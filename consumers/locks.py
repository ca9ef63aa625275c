"""Per-order serialisation inside a worker's transaction.

Two different commands for one order (a charge racing its refund, a reservation racing its
release) must not interleave, yet the row that would carry the lock may not exist yet (the void
marker is written by whichever comes first). A transaction-scoped advisory lock on the order key
serialises them and is released at commit or rollback. Every handler takes its order locks first,
before any row lock: one order's lock, or a batch's orders' locks in sorted order in one
statement. Lock order is always: order locks in key order, then rows in key order.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_LOCK_MANY = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
    " FROM unnest(CAST(:keys AS text[])) AS k"
)


async def lock_order(conn: AsyncConnection, schema: str, order_id: str) -> None:
    # The schema prefix keeps workers sharing one database from contending on each other's keys;
    # a hash collision only serialises two unrelated orders, never breaks correctness.
    await conn.execute(_LOCK, {"key": _key(schema, order_id)})


async def lock_orders(conn: AsyncConnection, schema: str, order_ids: Iterable[str]) -> None:
    """`lock_order` for many orders in one statement, in sorted order (so two batches that
    share orders queue instead of deadlocking). Read the orders' rows in a later statement:
    a statement's snapshot is taken before the locks it waits for are granted."""
    keys = sorted({_key(schema, order_id) for order_id in order_ids})
    await conn.execute(_LOCK_MANY, {"keys": keys})


def _key(schema: str, order_id: str) -> str:
    return f"{schema}:order:{order_id}"
