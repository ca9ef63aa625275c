"""Section 1, the bare relay baseline: what the broker and aio-pika allow without any saga logic.

N ~200-byte persistent JSON messages are put into queue A (a quorum queue declared like our
work queues); then a separate process (this module's `main`, uvloop like our services) relays
them to queue B with the batched loop of `sagaline_tools.bench.relay`: up to 64 messages or 5 ms,
persistent publishes whose confirms are awaited together, one `multiple` ack per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from sagaline.messaging.publish import amqp_message
from sagaline_tools.bench import amqp, cpu
from sagaline_tools.bench.config import BenchConfig
from sagaline_tools.bench.env import RELAY_QUEUES, BenchEnv
from sagaline_tools.bench.loop import HOP_HEADER, copy_until
from sagaline_tools.bench.progress import Step
from sagaline_tools.bench.relay import RelayStats, Timings, enqueue, run_relay
from sagaline_tools.bench.stats import median_round

BODY_BYTES = 200
MESSAGE_TYPE = "BenchRelayed"


def relay_body(seq: int, size: int = BODY_BYTES) -> bytes:
    """An envelope-shaped JSON document padded to exactly `size` bytes (ids ride in the AMQP
    properties too, as with our messages)."""
    doc: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "type": MESSAGE_TYPE,
        "payload": {"seq": seq, "pad": ""},
    }
    bare = len(json.dumps(doc, separators=(",", ":")).encode())
    doc["payload"]["pad"] = "x" * max(0, size - bare)
    return json.dumps(doc, separators=(",", ":")).encode()


def relay_messages(count: int, *, looped: bool = False) -> Iterator[aio_pika.Message]:
    """`count` messages; `looped`: each marked as the first hop of its loop (loop.py)."""
    for seq in range(count):
        body = relay_body(seq)
        yield amqp_message(
            body,
            message_id=json.loads(body)["message_id"],
            correlation_id=str(uuid.uuid4()),
            message_type=MESSAGE_TYPE,
            headers={HOP_HEADER: 1} if looped else None,
        )


async def run(env: BenchEnv, config: BenchConfig, step: Step) -> dict[str, Any]:
    """One hop A -> B (the baseline), then two hops A -> B -> C at once (the topology of the
    orchestrator section: the orchestrator's hop and the stub worker's hop share the box)."""
    count = config.sizes.messages
    topology = env.settings.topology
    connection = await amqp.connect(env.settings.amqp_url)
    try:
        channel = await amqp.confirm_channel(connection)
        a, b, c = [await amqp.declare_work_like(channel, topology, q) for q in RELAY_QUEUES]
        ones, twos = [], []
        for _ in range(config.repeat):
            step.phase("filling queue A", count)
            fill_seconds = await _fill(channel, a, count, step)
            step.phase("relaying A -> B", count)
            ones.append(await _relay(env, config, connection, [(a, b)], count, step))
            await (await channel.get_queue(b)).purge()
            step.phase("filling queue A", count)
            await _fill(channel, a, count, step)
            step.phase("relaying A -> B -> C", count)
            twos.append(await _relay(env, config, connection, [(a, b), (b, c)], count, step))
            await (await channel.get_queue(c)).purge()
        one, two = median_round(ones, "rate"), median_round(twos, "rate")
    finally:
        await connection.close()
    return {
        "messages": count,
        "body_bytes": BODY_BYTES,
        "msgs_per_s": one["rate"],
        "seconds": one["seconds"],
        "cpu_cores": one["cpu_cores"],
        "rounds": one["rounds"],
        "two_hop_msgs_per_s": two["rate"],
        "two_hop_rounds": two["rounds"],
        "two_hop_cpu_cores": two["cpu_cores"],
        "fill_msgs_per_s": count / fill_seconds if fill_seconds > 0 else None,
        "batch": config.relay_batch,
        "max_wait_ms": config.relay_max_wait_ms,
        "prefetch": config.relay_prefetch,
    }


async def _fill(channel: AbstractChannel, queue: str, count: int, step: Step) -> float:
    await (await channel.get_queue(queue)).purge()
    started = time.monotonic()
    await amqp.publish_window(
        channel.default_exchange,
        ((queue, m) for m in relay_messages(count)),
        window=500,
        progress=step.update,
    )
    return time.monotonic() - started


async def _relay(
    env: BenchEnv,
    config: BenchConfig,
    connection: AbstractConnection,
    hops: list[tuple[str, str]],
    count: int,
    step: Step,
) -> dict[str, Any]:
    """Run one relay process per hop at once; the rate is from the first hop's first batch
    to the last hop's last ack (CLOCK_MONOTONIC is shared by the processes)."""
    helpers = [
        env.start_helper(
            f"relay-{i + 1}", "sagaline_tools.bench.baseline", _args(env, config, hop, count)
        )
        for i, hop in enumerate(hops)
    ]
    final = hops[-1][1]
    pids = {f"relay{i + 1}": h.pid for i, h in enumerate(helpers) if h.pid is not None}
    before = cpu.snapshot(pids, env.servers)
    started = time.monotonic()
    results = asyncio.gather(*(h.read_json_line(within=60 + count / 200) for h in helpers))
    try:
        while not results.done():
            step.update(await amqp.queue_depth(connection, final))
            await asyncio.wait({results}, timeout=0.5)
        reports = results.result()
        usage = cpu.usage(before, cpu.snapshot(pids, env.servers), time.monotonic() - started)
    finally:
        results.cancel()  # when interrupted: the helpers are about to be stopped
        await env.stop(*helpers)
        if results.done() and not results.cancelled():
            results.exception()  # retrieved: an interrupted run reports the interruption
    delivered = await amqp.queue_depth(connection, final)
    step.update(delivered)
    if delivered != count:
        raise RuntimeError(f"the relay delivered {delivered} of {count} messages to {final}")
    seconds = max(r["last_at"] for r in reports) - min(r["first_at"] for r in reports)
    return {"rate": count / seconds if seconds > 0 else None, "seconds": seconds,
            "cpu_cores": usage}  # fmt: skip


def _args(env: BenchEnv, config: BenchConfig, hop: tuple[str, str], count: int) -> list[str]:
    return [
        "--amqp-url", env.settings.amqp_url,
        "--source", hop[0],
        "--target", hop[1],
        "--count", str(count),
        "--batch", str(config.relay_batch),
        "--max-wait-ms", str(config.relay_max_wait_ms),
        "--prefetch", str(config.relay_prefetch),
    ]  # fmt: skip


# --- the relay process ----------------------------------------------------------------------


async def relay_main(args: argparse.Namespace) -> dict[str, Any]:
    connection = await aio_pika.connect(args.amqp_url)
    try:
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=args.prefetch)
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        queue = await consume.declare_queue(args.source, passive=True)
        timings = Timings() if args.timed else None
        await queue.consume(enqueue(inbox, timings.arrived if timings else None))
        if args.timed:
            _report({"ready": True})  # the latency run paces its load from here
        stats = await run_relay(
            inbox,
            copy_until(publish.default_exchange, args.target, args.hops),
            batch=args.batch,
            max_wait=args.max_wait_ms / 1000,
            stats=RelayStats(),
            stop_after=args.count,
            timings=timings,
        )
    finally:
        await connection.close()
    result: dict[str, Any] = {
        "first_at": stats.first_at,
        "last_at": stats.last_at,
        "batches": stats.batches,
    }
    if timings is not None:
        result["stages"] = {"stages": timings.stages, "arrivals": timings.arrivals}
    return result


def _report(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="sagaline bench: bare batched relay A -> B")
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--prefetch", type=int, default=128)
    parser.add_argument("--timed", action="store_true", help="record each message's stages")
    parser.add_argument(
        "--hops", type=int, default=0, help="take a loop's HOPS-th arrival without a copy (loop.py)"
    )
    parser.add_argument("--stages-out", default="", help="file for the stages (with --timed)")
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(relay_main(args))
    if args.stages_out:
        # To a file: a report of ~1 MB through the stdout pipe came back cut at 64 kB in about
        # one latency run in four (cause not found); the file is read whole after the report.
        Path(args.stages_out).write_text(json.dumps(result.pop("stages", {})))
    _report(result)


if __name__ == "__main__":
    main()
