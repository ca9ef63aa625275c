"""A burst of orders published at once, with the readings taken just before it starts."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import asyncpg

from sagaline_tools.bench import amqp, cpu
from sagaline_tools.bench.env import BenchEnv
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.workload import order_envelope


async def wal_counters(conn: asyncpg.Connection) -> dict[str, int]:
    """PostgreSQL's WAL counters (server-wide: other databases' writes count too)."""
    row = await conn.fetchrow("SELECT wal_records, wal_fpi, wal_bytes, wal_sync FROM pg_stat_wal")
    return {key: int(row[key]) for key in ("wal_records", "wal_fpi", "wal_bytes", "wal_sync")}


def wal_per(before: dict[str, int], after: dict[str, int], units: int) -> dict[str, float]:
    """WAL written per unit of work (e.g. per transition) between two readings."""
    return {key: round((after[key] - before[key]) / max(1, units), 2) for key in before}


@dataclass(frozen=True)
class Burst:
    run_tag: str
    """Part of every order id of the burst (workload.order_id)."""
    started: float
    """Monotonic time of the first publish."""
    published: float
    """Monotonic time the last publish was confirmed."""
    cpu_before: cpu.CpuSnapshot
    wal_before: dict[str, int] | None


async def publish_orders(
    env: BenchEnv,
    step: Step,
    orders: int,
    pids: dict[str, int],
    conn: asyncpg.Connection | None = None,
) -> Burst:
    """Publish `orders` orders with confirms, as fast as the broker takes them; with `conn`,
    the WAL counters are read first."""
    run_tag = uuid.uuid4().hex[:8]
    step.phase("publishing orders", orders)
    connection = await amqp.connect(env.settings.amqp_url)
    try:
        channel = await amqp.confirm_channel(connection)
        wal_before = await wal_counters(conn) if conn is not None else None
        started = time.monotonic()
        cpu_before = cpu.snapshot(pids, env.servers)
        await amqp.publish_envelopes(
            channel,
            env.settings.topology.events_exchange,
            (order_envelope(run_tag, i, random_ids=env.random_ids) for i in range(orders)),
            progress=step.update,
        )
        published = time.monotonic()
    finally:
        await connection.close()
    return Burst(run_tag, started, published, cpu_before, wal_before)
