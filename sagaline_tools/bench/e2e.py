"""Section 3, end to end: orders through the orchestrator and the real workers, as deployed.

The orchestrator and the payments, inventory and shipping workers run as separate processes
(`python -m orchestrator`, `python -m consumers <name>`) with default settings; stock is seeded
for every order. N orders are published in one burst; the figure is N divided by the time from
the first publish until a sample (every 0.2 s) finds every saga finished. Both ends are read
from the monotonic clock: the sagas' `finished_at` is wall-clock time, and this VM's wall clock
has been seen to step by seconds during a run. The steady-state rate between 10% and 90% of
the sagas finishing is reported beside it.
"""

from __future__ import annotations

from typing import Any

from sagaline_tools.bench import cpu
from sagaline_tools.bench.burst import publish_orders
from sagaline_tools.bench.config import BenchConfig
from sagaline_tools.bench.env import BenchEnv
from sagaline_tools.bench.orchestrator_run import alive
from sagaline_tools.bench.procs import wait_ready
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.stats import window_rate
from sagaline_tools.bench.watch import sample_until
from sagaline_tools.bench.workload import stock_for

ORDER_WORKERS = ("payments", "inventory", "shipping")


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
    orders = config.sizes.e2e_orders
    step.phase("starting orchestrator and workers")
    await env.reset()
    await seed_stock(env, orders)
    # All at once: workers declare the orchestrator's queue themselves (for their replies).
    orchestrator = env.start_service("orchestrator", ["-m", "orchestrator"])
    workers = [env.start_service(n, ["-m", "consumers", n]) for n in ORDER_WORKERS]
    await wait_ready([orchestrator, *workers])
    children = {"orchestrator": orchestrator, **{w.name: w for w in workers}}
    pids = {name: child.pid for name, child in children.items() if child.pid is not None}
    conn = await env.connect_db()
    try:
        burst = await publish_orders(env, step, orders, pids)
        started, published = burst.started, burst.published

        async def finished() -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM saga.instances WHERE finished_at IS NOT NULL"
                )
            )

        step.phase("running sagas", orders)
        samples = await sample_until(
            finished,
            orders,
            on_sample=step.update,
            check=lambda: alive(*children.values()),
            what="finished sagas",
        )
        ended = samples[-1].at
        cpu_after = cpu.snapshot(pids, env.servers)
        states = {
            r["state"]: int(r["n"])
            for r in await conn.fetch(
                "SELECT state, count(*) AS n FROM saga.instances GROUP BY state"
            )
        }
    finally:
        await conn.close()
        await env.stop(*workers, orchestrator)
    completed = states.get("completed", 0)
    if completed != orders:
        raise RuntimeError(f"{completed} of {orders} sagas completed; states: {states}")
    seconds = ended - started
    return {
        "orders": orders,
        "completed": completed,
        "sagas_per_s": orders / seconds if seconds > 0 else None,
        "steady_sagas_per_s": window_rate(samples, orders),
        "seconds": seconds,
        "publish_seconds": published - started,
        "cpu_cores": cpu.usage(burst.cpu_before, cpu_after, ended - started),
    }
