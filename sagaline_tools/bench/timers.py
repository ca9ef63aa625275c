"""Section 6: many timers due at once when the orchestrator starts.

N live order sagas in awaiting_payment, each with its step-timeout timer already due, are
written with SQL (saga, started history/inbox/outbox rows, timer); then the orchestrator
starts. Timed from its start (process spawn, so start-up counts) until no step-timeout timer
is left and N `timer:step-timeout` history rows exist; then each saga must have exactly one.
Firing compensates the saga (RefundPayment to the payments queue, no worker running), so the
time includes those steps' outbox publishing, as it would in production.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sagaline_tools.bench import cpu
from sagaline_tools.bench.config import BenchConfig
from sagaline_tools.bench.env import BenchEnv
from sagaline_tools.bench.orchestrator_run import alive, history_mark
from sagaline_tools.bench.procs import Child, wait_ready
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.seed import due_in_past, order_templates, seed, vacuum_analyze
from sagaline_tools.bench.stats import window_rate
from sagaline_tools.bench.watch import sample_until

CHECK_SQL = """
SELECT count(*) AS sagas, count(*) FILTER (WHERE fired > 1) AS repeated
FROM (SELECT saga_id, count(*) AS fired FROM saga.history
      WHERE id > $1 AND message_type = $2 GROUP BY saga_id) per_saga
"""


async def run(env: BenchEnv, config: BenchConfig, step: Step) -> dict[str, Any]:
    count = config.sizes.timers
    live_template, _ = order_templates()
    if live_template.timer is None:
        raise RuntimeError("the order saga template has no pending timer")
    name = live_template.timer
    trigger = f"timer:{name}"
    await env.reset()
    conn = await env.connect_db()
    try:
        step.phase(f"seeding {count:,} sagas with due timers", count)
        due = due_in_past()
        await seed(
            conn,
            live_template,
            env.settings.topology,
            count=count,
            key_prefix="bench-timer-",
            with_history=True,
            timer_due=due,
            progress=step.update,
        )
        await vacuum_analyze(conn)
        mark = await history_mark(conn)

        async def fired() -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM saga.history WHERE id > $1 AND message_type = $2",
                    mark,
                    trigger,
                )
            )

        step.phase("firing timers", count)
        started = time.monotonic()
        orchestrator = env.start_service("orchestrator", ["-m", "orchestrator"])
        pids = {"orchestrator": orchestrator.pid or 0}
        cpu_before = cpu.snapshot(pids, env.servers)
        ready_task = asyncio.create_task(_ready_after(orchestrator))
        try:
            samples = await sample_until(
                fired,
                count,
                on_sample=step.update,
                check=lambda: alive(orchestrator),
                what="fired timers",
            )
            all_fired = samples[-1].at - started
            cpu_cores = cpu.usage(cpu_before, cpu.snapshot(pids, env.servers), all_fired)
            ready_seconds = await ready_task
            left = int(
                await conn.fetchval(
                    "SELECT count(*) FROM saga.timers WHERE name = $1 AND due_at <= $2", name, due
                )
            )
            check = await conn.fetchrow(CHECK_SQL, mark, trigger)
        finally:
            if not ready_task.done():
                ready_task.cancel()
            await env.stop(orchestrator)
    finally:
        await conn.close()
    sagas, repeated = int(check["sagas"]), int(check["repeated"])
    fired_once = sagas == count and repeated == 0 and left == 0
    return {
        "timers": count,
        "seconds": all_fired,
        "seconds_after_ready": all_fired - ready_seconds,
        "ready_seconds": ready_seconds,
        "timers_per_s": window_rate(samples, count),
        "fired_once": fired_once,
        "sagas_fired": sagas,
        "fired_more_than_once": repeated,
        "due_timers_left": left,
        "cpu_cores": cpu_cores,
    }


async def _ready_after(child: Child) -> float:
    """Seconds from the process's start until its /readyz answered."""
    await wait_ready([child])
    return time.monotonic() - child.started_at
