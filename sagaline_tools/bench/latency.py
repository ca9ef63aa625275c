"""Section 4: latency from an event's receipt to its command's confirm, at a steady load.

Orders are published at a steady rate chosen so that the orchestrator's transitions run at a
fixed fraction (half by default) of the rate the orchestrator section measured, with the stub
worker answering. Per command the latency is

    saga.outbox.published_at - saga.inbox.received_at

where the inbox row is the event that caused the command (history row -> `commands` list ->
outbox row by message id). `received_at` is the store's clock when the step's transaction
began (after the delivery was taken from the queue and parsed, so time spent in the queue and
in batching before the transaction is not included); `published_at` is when the outbox relay
marked the row after the broker confirmed it. So this is: step transaction + commit + outbox
wake-up + publish with confirm + mark, per command.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from sagaline.messaging.publish import envelope_message
from sagaline_tools.bench import amqp, cpu
from sagaline_tools.bench.config import STEPS_PER_ORDER, BenchConfig
from sagaline_tools.bench.env import BenchEnv
from sagaline_tools.bench.orchestrator_run import alive, history_mark, start_stub
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.stats import latency_summary
from sagaline_tools.bench.watch import sample_until
from sagaline_tools.bench.workload import order_envelope

LATENCY_SQL = """
SELECT extract(epoch FROM (o.published_at - i.received_at)) * 1000 AS ms
FROM saga.history h
JOIN saga.inbox i ON i.message_id = h.message_id
CROSS JOIN LATERAL jsonb_array_elements(h.commands) c
JOIN saga.outbox o ON o.message_id = (c ->> 'message_id')::uuid
WHERE h.id > $1 AND c ->> 'kind' = 'command' AND o.published_at IS NOT NULL
"""


def offered_rates(config: BenchConfig, orchestrator_rate: float | None) -> tuple[float, float]:
    """(transitions/s, orders/s) to offer."""
    if orchestrator_rate is not None:
        transitions = orchestrator_rate * config.latency_fraction
    elif config.latency_rate is not None:
        transitions = config.latency_rate
    else:
        raise ValueError("no orchestrator rate measured and no --latency-rate given")
    return transitions, transitions / STEPS_PER_ORDER


async def run(
    env: BenchEnv, config: BenchConfig, step: Step, orchestrator_rate: float | None
) -> dict[str, Any]:
    transitions_rate, orders_rate = offered_rates(config, orchestrator_rate)
    orders = max(1, round(orders_rate * config.sizes.latency_seconds))
    run_tag = uuid.uuid4().hex[:8]
    step.phase("starting orchestrator and stub worker")
    await env.reset()
    orchestrator = await env.start_orchestrator()
    stub = await start_stub(env, config)
    conn = await env.connect_db()
    try:
        mark = await history_mark(conn)
        step.phase(f"offering {transitions_rate:,.0f} transitions/s", orders)
        connection = await amqp.connect(env.settings.amqp_url)
        try:
            channel = await amqp.confirm_channel(connection)
            exchange = await channel.get_exchange(
                env.settings.topology.events_exchange, ensure=False
            )
            pending: list[asyncio.Task[Any]] = []
            pids = {"orchestrator": orchestrator.pid or 0, "stub": stub.pid or 0}
            cpu_before = cpu.snapshot(pids, env.servers)
            started = time.monotonic()
            for i in range(orders):
                delay = started + i / orders_rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                envelope = order_envelope(run_tag, i)
                message = envelope_message(envelope)
                pending.append(
                    asyncio.create_task(
                        exchange.publish(message, routing_key=envelope.type, mandatory=True)
                    )
                )
                if i % 50 == 0:
                    step.update(i)
                    alive(orchestrator, stub)
            offered_seconds = time.monotonic() - started
            cpu_cores = cpu.usage(cpu_before, cpu.snapshot(pids, env.servers), offered_seconds)
            await asyncio.gather(*pending)
        finally:
            await connection.close()

        async def transitions() -> int:
            return int(await conn.fetchval("SELECT count(*) FROM saga.history WHERE id > $1", mark))

        step.phase("draining", orders * STEPS_PER_ORDER)
        await sample_until(
            transitions,
            orders * STEPS_PER_ORDER,
            on_sample=step.update,
            check=lambda: alive(orchestrator, stub),
            what="transitions",
        )
        latencies = [float(r["ms"]) for r in await conn.fetch(LATENCY_SQL, mark)]
    finally:
        await conn.close()
        await env.stop(stub, orchestrator)
    if not latencies:
        raise RuntimeError("no command latencies recorded")
    achieved = orders / offered_seconds * STEPS_PER_ORDER if offered_seconds > 0 else None
    return {
        "measured": "outbox.published_at - inbox.received_at of the causing event, per command",
        "offered_transitions_per_s": transitions_rate,
        "achieved_transitions_per_s": achieved,
        "orders": orders,
        "seconds": offered_seconds,
        "cpu_cores": cpu_cores,
        **latency_summary(latencies),
    }
