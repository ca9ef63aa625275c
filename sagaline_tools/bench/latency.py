"""Section 4: latency of the orchestrator's hop at half load, against the broker's own hop.

Both are timed in their own process on the monotonic clock, from a delivery's arrival to the
broker's confirm of what it caused:

- the bare relay (baseline.py with --timed) takes the orchestrator's event rate (the
  transitions/s below) of 200-byte messages in the orchestrator run's loop (loop.py): a
  quarter of them fresh from the paced publisher, three quarters echoed back from B by a
  stub (stub_worker --echo) in the bursts it answers a batch with; it relays A -> B in
  batches (64 / 5 ms), takes a loop's fourth arrival without a copy (the order's last event
  causes no command), and notes, per copied message, its wait for the batch and the publish
  up to the confirm of its copy. The broker carries the same traffic in both runs: per
  arrival at the hop, the same publishes, deliveries and acks, in the same bursts. (Offered
  all at the paced rate instead, the relay's arrivals were evenly spaced while three in four
  of the orchestrator's came in bursts: the two hops were not measured under the same load.)
- the orchestrator, with the stub worker answering, is offered orders at a steady rate so
  that it makes a fixed fraction (half by default) of what it can do at that moment: each
  round first measures the orchestrator alone again (one burst of the orchestrator section's,
  `--orders` orders on empty tables) and offers the fraction of that rate, unless
  `--latency-rate` fixes the rate. (A fraction of the orchestrator section's figure, measured
  minutes before with the end-to-end runs in between, could be well over half load by the time
  a round ran in an hour that had slowed.) With SAGALINE_STAGE_LOG set it writes each batch's
  stage times (sagaline.messaging.stages), from which each event that sent a command gets its
  latency arrival -> command confirmed, split into: wait for the batch, parse, transaction
  (commit included), ack, claim of the outbox rows, publish until confirmed; and the
  transaction split again into pool checkout, the read, planning, the write (its commit
  included) and giving the connection back.

A round is: the orchestrator alone (its rate sets the round's offered rate), the orchestrator's
latency, then the bare relay's at the same rate. The figure is the orchestrator's p99 as a
multiple of the relay's p99 at the same rate; with `--repeat N` the round runs N times and the
median round is shown. Beside it, `pooled`: each side's p99 over all its rounds' messages and
their ratio. A machine stall fills one round's slowest 1% on whichever side it hits, so
per-round ratios scatter (0.7-7.7 in one morning); pooled, a short stall weighs 1/N as much on
either side, while a slow stretch as long as a round still fills the pool's slowest 1% (it
shows, it is not smoothed away). Each side's `tail_spread` tells a stall from queueing: the
seconds of the round its slowest 1% arrived in, and the busiest one's share. (The stalls caught
on 2026-12-07 were RabbitMQ's quorum-queue WAL rolling over: docs/benchmark-log.md.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagaline.messaging.publish import envelope_message
from sagaline_tools.bench import amqp, cpu, orchestrator_run
from sagaline_tools.bench.baseline import relay_messages
from sagaline_tools.bench.config import STEPS_PER_ORDER, BenchConfig
from sagaline_tools.bench.env import RELAY_QUEUES, BenchEnv
from sagaline_tools.bench.orchestrator_run import (
    alive,
    history_mark,
    start_stub,
    transitions_since,
)
from sagaline_tools.bench.procs import Child
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.stage_report import (
    batching,
    orchestrator_stages,
    summarize,
    totals_ms,
)
from sagaline_tools.bench.stats import median_round, percentile, ratio
from sagaline_tools.bench.watch import sample_until
from sagaline_tools.bench.workload import order_envelope


def offered_rates(config: BenchConfig, alone_rate: float | None) -> tuple[float, float]:
    """(transitions/s, orders/s) to offer: `--latency-rate` if given, else the fraction of the
    orchestrator's rate alone."""
    if config.latency_rate is not None:
        transitions = config.latency_rate
    elif alone_rate is not None and alone_rate > 0:
        transitions = alone_rate * config.latency_fraction
    else:
        raise RuntimeError("the orchestrator alone made no transitions: no rate to offer")
    return transitions, transitions / STEPS_PER_ORDER


async def alone_rate(env: BenchEnv, config: BenchConfig, step: Step) -> float | None:
    """The orchestrator's rate alone right now: one burst of the orchestrator section."""
    burst = await orchestrator_run.run(env, config, step, rounds=1)
    rate = burst.get("transitions_per_s")
    return float(rate) if rate is not None else None


async def run(env: BenchEnv, config: BenchConfig, step: Step) -> dict[str, Any]:
    """`config.repeat` rounds, each the orchestrator alone, then the orchestrator's latency at
    a fraction of that rate and the bare relay's at the same rate; the round with the median
    p99 ratio is the result (every round's ratio under `rounds`). One round's p99 rests on its
    slowest 1%, which a stall of the whole machine can fill: the median of interleaved rounds
    is the steadier verdict."""
    rounds = []
    offered = []
    pooled: dict[str, list[float]] = {"orchestrator": [], "relay": []}
    for _ in range(config.repeat):
        fixed = config.latency_rate is not None
        alone = None if fixed else await alone_rate(env, config, step)
        transitions_rate, orders_rate = offered_rates(config, alone)
        offered.append(transitions_rate)
        result = await orchestrator_latency(env, config, step, transitions_rate, orders_rate)
        relay = await relay_latency(env, config, step, transitions_rate)
        pooled["relay"] += relay.pop(TOTALS)
        pooled["orchestrator"] += result.pop(TOTALS)
        result["orchestrator_alone_per_s"] = alone
        result["relay"] = relay
        result["p99_ratio"] = ratio(result["p99_ms"], relay["p99_ms"])
        rounds.append(result)
    chosen = median_round(rounds, "p99_ratio")
    if len(rounds) > 1:
        chosen["pooled"] = pooled_p99(pooled["orchestrator"], pooled["relay"])
        chosen["rounds_steal"] = [stolen(r) for r in rounds]
        chosen["rounds_tail_spread"] = [
            [r["relay"].get("tail_spread"), r.get("tail_spread")] for r in rounds
        ]
        chosen["rounds_offered_per_s"] = offered
    return chosen


def stolen(round_result: dict[str, Any]) -> list[float | None]:
    """[relay, orchestrator]: cores the hypervisor took from this VM during each side's run.
    A round in which it took a few tenths of a core is slower on that side for reasons that are
    not the code's: every stage stretches at once (docs/benchmark-log.md, 2026-12-07 morning)."""
    sides = (round_result.get("relay") or {}, round_result)
    return [(side.get("cpu_cores") or {}).get("steal") for side in sides]


TOTALS = "totals_ms"
"""A round's per-message latencies, kept out of the JSON (tens of thousands of numbers)."""


def pooled_p99(orchestrator_ms: list[float], relay_ms: list[float]) -> dict[str, Any]:
    """Each side's p99 over every round's messages, and the orchestrator's as a multiple of
    the relay's."""
    p99 = percentile(orchestrator_ms, 99)
    relay_p99 = percentile(relay_ms, 99)
    return {"p99_ms": p99, "relay_p99_ms": relay_p99, "p99_ratio": ratio(p99, relay_p99)}


def _watching(step: Step, *children: Child) -> Callable[[int], None]:
    def progress(done: int) -> None:
        step.update(done)
        alive(*children)

    return progress


async def relay_latency(
    env: BenchEnv, config: BenchConfig, step: Step, rate: float
) -> dict[str, Any]:
    """The bare relay's per-message latency at `rate` arrivals/s, in the loop of loop.py."""
    fresh_rate = rate / STEPS_PER_ORDER
    fresh = max(1, round(fresh_rate * config.sizes.latency_seconds))
    count = fresh * STEPS_PER_ORDER  # arrivals at the relay, the last of each loop not copied
    source, target = RELAY_QUEUES[0], RELAY_QUEUES[1]
    connection = await amqp.connect(env.settings.amqp_url)
    try:
        channel = await amqp.confirm_channel(connection)
        a, b = [
            await amqp.declare_work_like(channel, env.settings.topology, q)
            for q in (source, target)
        ]
        for name in (a, b):
            await (await channel.get_queue(name)).purge()
        stages_path = env.log_dir / f"relay-stages-{uuid.uuid4().hex[:6]}.json"
        echo = await start_stub(env, config, echo=(b, a))
        relay = env.start_helper(
            "relay-timed",
            "sagaline_tools.bench.baseline",
            [
                "--amqp-url", env.settings.amqp_url,
                "--source", a,
                "--target", b,
                "--count", str(count),
                "--batch", str(config.relay_batch),
                "--max-wait-ms", str(config.relay_max_wait_ms),
                "--prefetch", str(config.relay_prefetch),
                "--timed",
                "--hops", str(STEPS_PER_ORDER),
                "--stages-out", str(stages_path),
            ],
        )  # fmt: skip
        try:
            await relay.read_json_line(within=60)
            step.phase(f"bare relay at {rate:,.0f} msgs/s", fresh)
            pids = {"relay": relay.pid or 0, "echo": echo.pid or 0}
            cpu_before = cpu.snapshot(pids, env.servers)
            offered = await amqp.publish_paced(
                channel.default_exchange,
                ((a, m) for m in relay_messages(fresh, looped=True)),
                fresh_rate,
                progress=_watching(step, relay, echo),
            )
            usage = cpu.usage(cpu_before, cpu.snapshot(pids, env.servers), offered)
            await relay.read_json_line(within=60 + count / 100)  # the stages file is written
        finally:
            await env.stop(relay, echo)
        await (await channel.get_queue(b)).purge()
    finally:
        await connection.close()
    timed = json.loads(stages_path.read_text())
    stages: list[dict[str, float]] = timed["stages"]
    return {
        "offered_msgs_per_s": rate,
        "loop": f"1 in {STEPS_PER_ORDER} arrivals paced, the rest echoed; the last not copied",
        "messages": len(stages),
        "seconds": offered,
        "cpu_cores": usage,
        **summarize(stages, arrivals=timed["arrivals"]),
        TOTALS: totals_ms(stages),
    }


async def orchestrator_latency(
    env: BenchEnv, config: BenchConfig, step: Step, transitions_rate: float, orders_rate: float
) -> dict[str, Any]:
    orders = max(1, round(orders_rate * config.sizes.latency_seconds))
    step.phase("starting orchestrator and stub worker")
    await env.reset()
    stage_log = env.log_dir / f"stages-{uuid.uuid4().hex[:6]}.jsonl"
    orchestrator = await env.start_orchestrator({"SAGALINE_STAGE_LOG": str(stage_log)})
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
            run_tag = uuid.uuid4().hex[:8]
            envelopes = (
                order_envelope(run_tag, i, random_ids=env.random_ids) for i in range(orders)
            )
            pids = {"orchestrator": orchestrator.pid or 0, "stub": stub.pid or 0}
            cpu_before = cpu.snapshot(pids, env.servers)
            offered = await amqp.publish_paced(
                exchange,
                ((e.type, envelope_message(e)) for e in envelopes),
                orders_rate,
                progress=_watching(step, orchestrator, stub),
            )
            cpu_cores = cpu.usage(cpu_before, cpu.snapshot(pids, env.servers), offered)
        finally:
            await connection.close()

        step.phase("draining", orders * STEPS_PER_ORDER)
        await sample_until(
            transitions_since(conn, mark, orders * STEPS_PER_ORDER),
            orders * STEPS_PER_ORDER,
            on_sample=step.update,
            check=lambda: alive(orchestrator, stub),
            what="transitions",
        )
    finally:
        await conn.close()
        await env.stop(stub, orchestrator)  # the orchestrator's last batch lines are written
    lines = _lines(stage_log)
    timings = orchestrator_stages(lines)
    if not timings.messages:
        raise RuntimeError("no command latencies recorded")
    return {
        "measured": "delivery arrival -> confirm of the command it caused, in the orchestrator",
        "offered_transitions_per_s": transitions_rate,
        "achieved_transitions_per_s": orders * STEPS_PER_ORDER / offered if offered > 0 else None,
        "orders": orders,
        "seconds": offered,
        "cpu_cores": cpu_cores,
        "batches_untimed": timings.incomplete,
        "batching": batching(lines),
        **summarize(timings.messages, timings.parts, timings.arrivals),
        TOTALS: totals_ms(timings.messages),
    }


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
