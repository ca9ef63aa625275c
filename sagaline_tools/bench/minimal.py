"""The minimal step section: the reference the orchestrator alone is measured against.

The same run as the orchestrator section (N orders published in one burst, the stub worker
answering every command, the same batch size, wait and prefetch), with the orchestrator
replaced by the minimal step of minimal_step.py. The rate is taken the same way, between 10%
and 90% of the expected transitions, from the step's own count after each batch.
"""

from __future__ import annotations

from typing import Any

from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR
from orchestrator.app import event_bindings
from orchestrator.workflows.loading import load_workflows
from sagaline.messaging.declare import declare_consumer, declare_exchanges
from sagaline_tools.bench import amqp, cpu
from sagaline_tools.bench.burst import publish_orders, wal_counters, wal_per
from sagaline_tools.bench.config import STEPS_PER_ORDER, BenchConfig
from sagaline_tools.bench.env import BenchEnv
from sagaline_tools.bench.minimal_step import TABLES
from sagaline_tools.bench.orchestrator_run import alive, start_stub
from sagaline_tools.bench.procs import Child
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.stats import Sample, median_round, window_rate


async def declare_topology(env: BenchEnv) -> None:
    """What the orchestrator declares when it starts: its queue with the events it consumes,
    and the workers' queues with their commands."""
    settings = env.settings
    topology = settings.topology
    connection = await amqp.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await declare_exchanges(channel, topology)
        bindings = event_bindings(topology, load_workflows(settings.workflows))
        await declare_consumer(channel, topology, ORCHESTRATOR, bindings)
        for worker, commands in WORKER_COMMANDS.items():
            routes = [(topology.commands_exchange, c.message_type) for c in commands]
            await declare_consumer(channel, topology, worker, routes)
    finally:
        await connection.close()


def start_minimal_step(env: BenchEnv, expect: int) -> Child:
    """With the batch settings the orchestrator gets from this environment (not from --env)."""
    settings = env.settings
    prefetch = settings.prefetch or settings.batch_size * settings.batch_workers * 2
    return env.start_helper(
        "minimal-step",
        "sagaline_tools.bench.minimal_step",
        [
            "--amqp-url", settings.amqp_url,
            "--dsn", env.dsn,
            "--namespace", env.namespace,
            "--expect", str(expect),
            "--batch", str(settings.batch_size),
            "--max-wait-ms", str(settings.batch_wait_ms),
            "--workers", str(settings.batch_workers),
            "--prefetch", str(prefetch),
        ],
    )  # fmt: skip


async def run(env: BenchEnv, config: BenchConfig, step: Step) -> dict[str, Any]:
    step.phase("starting the minimal step and the stub worker")
    await env.reset()
    await declare_topology(env)
    conn = await env.connect_db()
    try:
        await conn.execute(TABLES)
    finally:
        await conn.close()
    stub = await start_stub(env, config)
    rounds = []
    try:
        for _ in range(config.repeat):
            rounds.append(await _round(env, config, step, stub))
    finally:
        await env.stop(stub)
    return median_round(rounds, "transitions_per_s")


async def _round(env: BenchEnv, config: BenchConfig, step: Step, stub: Child) -> dict[str, Any]:
    orders = config.sizes.orders
    expected = orders * STEPS_PER_ORDER
    child = start_minimal_step(env, expected)
    conn = await env.connect_db()
    try:
        await child.read_json_line(within=60)
        pids = {"minimal": child.pid or 0, "stub": stub.pid or 0}
        burst = await publish_orders(env, step, orders, pids, conn)
        step.phase("measuring transitions", expected)
        alive(stub)
        report = await child.read_json_line(within=120 + expected / 50)
        cpu_after = cpu.snapshot(pids, env.servers)
        samples = [Sample(at, count) for at, count in report["samples"]]
        ended = samples[-1].at
        step.update(samples[-1].count)
        assert burst.wal_before is not None
        wal = wal_per(burst.wal_before, await wal_counters(conn), expected)
        completed = await conn.fetchval(
            "SELECT count(*) FROM bench_minimal.sagas"
            " WHERE state = 'completed' AND data ->> 'order_id' LIKE $1",
            f"bench-{burst.run_tag}-%",
        )
    finally:
        await conn.close()
        await env.stop(child)
    if completed != orders:
        raise RuntimeError(f"{completed} of {orders} orders completed in the minimal step")
    return {
        "orders": orders,
        "transitions": expected,
        "completed": int(completed),
        "transitions_per_s": window_rate(samples, expected),
        "seconds": ended - burst.started,
        "cpu_cores": cpu.usage(burst.cpu_before, cpu_after, ended - burst.started),
        "wal_per_transition": wal,
    }
