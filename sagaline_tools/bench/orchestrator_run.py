"""Sections 2 and 5: the orchestrator alone, fed by the stub reply generator.

The real orchestrator process runs with the stub answering every command at once; N orders
are published in one burst and the orchestrator's history rows (one per transition) are
counted over time. The figure is the steady-state rate between 10% and 90% of the expected
transitions; the rate over the span of the rows' own timestamps is reported beside it.
Section 5 repeats this after seeding the saga tables with finished and live sagas, then
once more on emptied tables right after: its ratio is to that run, a minute away, not to the
orchestrator section's, which ran before the other sections and the seeding (10-20 minutes
earlier in a full run, time enough for this machine's speed to drift).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from sagaline_tools.bench import cpu
from sagaline_tools.bench.burst import publish_orders, wal_counters, wal_per
from sagaline_tools.bench.config import STEPS_PER_ORDER, BenchConfig
from sagaline_tools.bench.env import BenchEnv
from sagaline_tools.bench.procs import Child
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.seed import due_in_future, order_templates, seed, vacuum_analyze
from sagaline_tools.bench.stats import median_round, span_rate, window_rate
from sagaline_tools.bench.watch import Metered, cheap_then_exact, sample_until


async def start_stub(
    env: BenchEnv, config: BenchConfig, echo: tuple[str, str] | None = None
) -> Child:
    """The stub worker answering the order commands; with `echo` (queue, answer queue), the
    bare relay's worker in the latency section's loop (loop.py)."""
    stub = env.start_helper(
        "relay-echo" if echo else "stub-worker",
        "sagaline_tools.bench.stub_worker",
        [
            "--amqp-url", env.settings.amqp_url,
            "--namespace", env.namespace,
            "--batch", str(config.relay_batch),
            "--max-wait-ms", str(config.relay_max_wait_ms),
            "--prefetch", str(config.relay_prefetch),
            *(["--echo", echo[0], "--echo-to", echo[1]] if echo else []),
        ],
    )  # fmt: skip
    await stub.read_json_line(within=60)
    return stub


def alive(*children: Child) -> None:
    for child in children:
        if not child.running():
            raise child.failure("exited during the measurement")


async def history_mark(conn: asyncpg.Connection) -> int:
    """The highest history id so far: rows above it belong to the measurement. One probe at
    the end of the primary key's index, whatever the table's size."""
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM saga.history"))


def transitions_since(conn: asyncpg.Connection, mark: int, target: int) -> Metered:
    """History rows written since `mark`: read from the ids' top until it reaches `target`,
    then counted (ids of rolled-back steps are skipped, so the top may run ahead)."""

    async def top() -> int:
        return await history_mark(conn) - mark

    async def exact() -> int:
        return int(await conn.fetchval("SELECT count(*) FROM saga.history WHERE id > $1", mark))

    return Metered(cheap_then_exact(top, exact, target))


async def drive(
    env: BenchEnv,
    step: Step,
    conn: asyncpg.Connection,
    orders: int,
    children: dict[str, Child],
    *,
    steps_per_order: int = STEPS_PER_ORDER,
) -> dict[str, Any]:
    """Publish `orders` orders at once; wait for their transitions; rates and CPU use."""
    mark = await history_mark(conn)
    expected = orders * steps_per_order
    pids = {name: child.pid for name, child in children.items() if child.pid is not None}
    burst = await publish_orders(env, step, orders, pids, conn)
    started, published = burst.started, burst.published

    transitions = transitions_since(conn, mark, expected)
    step.phase("measuring transitions", expected)
    samples = await sample_until(
        transitions,
        expected,
        on_sample=step.update,
        check=lambda: alive(*children.values()),
        what="transitions",
    )
    ended = samples[-1].at
    cpu_after = cpu.snapshot(pids, env.servers)
    assert burst.wal_before is not None
    wal = wal_per(burst.wal_before, await wal_counters(conn), expected)
    span = await conn.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM min(at)) AS first,"
        " extract(epoch FROM max(at)) AS last FROM saga.history WHERE id > $1",
        mark,
    )
    completed = await conn.fetchval(
        "SELECT count(*) FROM saga.instances WHERE business_key LIKE $1 AND state = 'completed'",
        f"bench-{burst.run_tag}-%",
    )
    rate = window_rate(samples, expected)
    return {
        "orders": orders,
        "transitions": expected,
        "completed": int(completed),
        "transitions_per_s": rate,
        "history_span_per_s": span_rate(int(span["n"]), float(span["first"]), float(span["last"])),
        "seconds": ended - started,
        "publish_seconds": published - started,
        "cpu_cores": cpu.usage(burst.cpu_before, cpu_after, ended - started),
        "wal_per_transition": wal,
        "monitoring": transitions.report(ended - started),
    }


async def run(
    env: BenchEnv, config: BenchConfig, step: Step, *, rounds: int | None = None
) -> dict[str, Any]:
    """Section 2: empty saga tables; `rounds` (default `config.repeat`) bursts on one
    orchestrator, the median round is the result. The latency section runs one round of it
    before each of its own to learn what half load is at that moment."""
    step.phase("starting orchestrator and stub worker")
    await env.reset()
    return await _measure(env, config, step, rounds=rounds)


async def _measure(
    env: BenchEnv, config: BenchConfig, step: Step, *, rounds: int | None = None
) -> dict[str, Any]:
    """`rounds` (default `config.repeat`) bursts on one orchestrator; the median round is the
    result."""
    orchestrator = await env.start_orchestrator()
    stub = await start_stub(env, config)
    conn = await env.connect_db()
    results = []
    try:
        for _ in range(config.repeat if rounds is None else rounds):
            result = await drive(
                env,
                step,
                conn,
                config.sizes.orders,
                {"orchestrator": orchestrator, "stub": stub},
            )
            if result["completed"] != result["orders"]:
                raise RuntimeError(f"{result['completed']} of {result['orders']} orders completed")
            results.append(result)
    finally:
        await conn.close()
        await env.stop(stub, orchestrator)
    return median_round(results, "transitions_per_s")


async def run_scaled(env: BenchEnv, config: BenchConfig, step: Step) -> dict[str, Any]:
    """Section 5: the same measurement with finished and live sagas already in the tables."""
    await env.reset()
    sizes = config.sizes
    live_template, finished_template = order_templates()
    topology = env.settings.topology
    conn = await env.connect_db()
    seeded_at = time.monotonic()
    try:
        step.phase(f"seeding {sizes.finished:,} finished sagas", sizes.finished)
        await seed(
            conn,
            finished_template,
            topology,
            count=sizes.finished,
            key_prefix="bench-finished-",
            with_history=config.seed_history,
            progress=step.update,
        )
        step.phase(f"seeding {sizes.live:,} live sagas", sizes.live)
        await seed(
            conn,
            live_template,
            topology,
            count=sizes.live,
            key_prefix="bench-live-",
            with_history=config.seed_history,
            timer_due=due_in_future(),
            progress=step.update,
        )
        step.phase("vacuum analyze + checkpoint")
        await vacuum_analyze(conn)
        rows = {
            table: int(
                await conn.fetchval(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass",
                    f"saga.{table}",
                )
            )
            for table in ("instances", "history", "inbox", "outbox", "timers")
        }
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    finally:
        await conn.close()
    seed_seconds = time.monotonic() - seeded_at
    step.phase("starting orchestrator and stub worker")
    result = await _measure(env, config, step)
    step.phase("the same on emptied tables, for the ratio")
    await env.reset()
    beside = await _measure(env, config, step)
    result.update(
        {
            "empty_beside": {
                "transitions_per_s": beside["transitions_per_s"],
                "rounds": beside["rounds"],
            },
            "finished": sizes.finished,
            "live": sizes.live,
            "seeded_history": config.seed_history,
            "seed_seconds": seed_seconds,
            "table_rows": rows,
            "database_size": size,
        }
    )
    return result
