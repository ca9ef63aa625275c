"""Per-order serialisation inside a worker's transaction.

Two different commands for one order (a charge racing its refund, a reservation racing its
release) must not interleave, yet the row that would carry the lock may not exist yet (the void
marker is written by whichever comes first). A transaction-scoped advisory lock on the order key
serialises them and is released at commit or rollback. Every handler takes this lock first and at
most one of it, before any row lock, so lock order is always: order lock, then rows in key order.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def lock_order(conn: AsyncConnection, schema: str, order_id: str) -> None:
    # The schema prefix keeps workers sharing one database from contending on each other's keys;
    # a hash collision only serialises two unrelated orders, never breaks correctness.
    await conn.execute(_LOCK, {"key": f"{schema}:order:{order_id}"})
