"""Section 3, end to end: orders through the orchestrator and the real workers, as deployed.

The orchestrator and the payments, inventory and shipping workers run as separate processes
(`python -m orchestrator`, `python -m consumers <name>`) with default settings; stock is seeded
for every order. N orders are published in one burst; the rate is N divided by the time from
the first publish until every saga has finished: the real end-to-end rate, nothing else. Both
ends are read from the monotonic clock (the sagas' `finished_at` is wall-clock time, and this
VM's wall clock has been seen to step by seconds during a run).

The run is repeated for each size of `e2e_orders`, each from empty tables with fresh
processes: the first size is the end-to-end figure, the others show how the rate and the cost
per saga (CPU time of each process) grow as the tables grow during the run. The tables are never
analyzed by the bench; whether PostgreSQL did (autovacuum) is recorded with each size.

Progress is read from the top of the history ids (one index probe; four rows per finished
saga) and counted exactly only once that says all are done: the bench's own reads cost the
measured system nothing noticeable (reported as `monitoring`).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from sagaline_tools.bench import cpu
from sagaline_tools.bench.burst import publish_orders
from sagaline_tools.bench.config import STEPS_PER_ORDER, BenchConfig
from sagaline_tools.bench.env import BenchEnv
from sagaline_tools.bench.guesses import snapshot_guesses
from sagaline_tools.bench.orchestrator_run import alive, history_mark
from sagaline_tools.bench.procs import wait_ready
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.watch import Metered, cheap_then_exact, sample_until
from sagaline_tools.bench.workload import stock_for

ORDER_WORKERS = ("payments", "inventory", "shipping")
SCHEMAS = ("saga", *ORDER_WORKERS)
"""The schemas whose tables an order touches."""

PLANNER_STATE = """
SELECT schemaname || '.' || relname AS name, last_analyze, last_autoanalyze
FROM pg_stat_user_tables WHERE schemaname = ANY($1::text[]) ORDER BY 1
"""


async def seed_stock(env: BenchEnv, count: int) -> None:
    from consumers.inventory.handlers import seed_stock as seed
    from sagaline.db import create_unpooled_engine

    engine = create_unpooled_engine(env.settings.sqlalchemy_url)
    try:
        async with engine.begin() as conn:
            await seed(conn, stock_for(count))
    finally:
        await engine.dispose()


async def run(env: BenchEnv, config: BenchConfig, step: Step) -> dict[str, Any]:
    sizes = config.sizes.e2e_orders
    rungs = []
    for orders in sizes:
        rungs.append(await _rung(env, step, orders))
    first = rungs[0]
    return {**first, "growth": rungs}


async def planner_state(conn: asyncpg.Connection) -> dict[str, Any]:
    """Whether autovacuum runs, and which tables PostgreSQL has statistics for and since when."""
    tables = await conn.fetch(PLANNER_STATE, list(SCHEMAS))
    analyzed = {
        r["name"]: str(r["last_analyze"] or r["last_autoanalyze"])
        for r in tables
        if r["last_analyze"] or r["last_autoanalyze"]
    }
    return {
        "autovacuum": await conn.fetchval("SHOW autovacuum"),
        "plan_cache_mode": await conn.fetchval("SHOW plan_cache_mode"),
        "tables": len(tables),
        "analyzed": analyzed,
    }


async def _rung(env: BenchEnv, step: Step, orders: int) -> dict[str, Any]:
    step.phase(f"{orders:,} orders: starting orchestrator and workers")
    await env.reset(SCHEMAS)
    await seed_stock(env, orders)
    # All at once: workers declare the orchestrator's queue themselves (for their replies).
    orchestrator = env.start_service("orchestrator", ["-m", "orchestrator"])
    workers = [env.start_service(n, ["-m", "consumers", n]) for n in ORDER_WORKERS]
    await wait_ready([orchestrator, *workers])
    children = {"orchestrator": orchestrator, **{w.name: w for w in workers}}
    pids = {name: child.pid for name, child in children.items() if child.pid is not None}
    conn = await env.connect_db()
    try:
        mark = await history_mark(conn)
        burst = await publish_orders(env, step, orders, pids)
        finished = _finished_sagas(conn, mark, orders)
        step.phase(f"{orders:,} orders: running sagas", orders)
        samples = await sample_until(
            finished,
            orders,
            on_sample=step.update,
            check=lambda: alive(*children.values()),
            what="finished sagas",
        )
        ended = samples[-1].at
        cpu_after = cpu.snapshot(pids, env.servers)
        guesses = await snapshot_guesses(orchestrator.port)
        states = {
            r["state"]: int(r["n"])
            for r in await conn.fetch(
                "SELECT state, count(*) AS n FROM saga.instances GROUP BY state"
            )
        }
        planner = await planner_state(conn)
    finally:
        await conn.close()
        await env.stop(*workers, orchestrator)
    completed = states.get("completed", 0)
    if completed != orders:
        raise RuntimeError(f"{completed} of {orders} sagas completed; states: {states}")
    seconds = ended - burst.started
    cores = cpu.usage(burst.cpu_before, cpu_after, seconds)
    return {
        "orders": orders,
        "completed": completed,
        "sagas_per_s": orders / seconds if seconds > 0 else None,
        "seconds": seconds,
        "publish_seconds": burst.published - burst.started,
        "cpu_cores": cores,
        "cpu_ms_per_saga": {
            name: round(value * seconds / orders * 1000, 3)
            for name, value in cores.items()
            if name != "other"
        },
        "monitoring": finished.report(seconds),
        "planner": planner,
        "snapshot_guesses": guesses,
    }


def _finished_sagas(conn: asyncpg.Connection, mark: int, orders: int) -> Metered:
    """Finished sagas, estimated from the history ids' top (a successful order writes
    STEPS_PER_ORDER rows) until that reaches `orders`, then counted."""

    async def estimate() -> int:
        return (await history_mark(conn) - mark) // STEPS_PER_ORDER

    async def exact() -> int:
        query = "SELECT count(*) FROM saga.instances WHERE finished_at IS NOT NULL"
        return int(await conn.fetchval(query))

    return Metered(cheap_then_exact(estimate, exact, orders))
