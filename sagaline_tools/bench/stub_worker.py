"""The stub reply generator: every order command answered at once with its success reply.

Stands in for the three order workers so that the orchestrator is what the run measures. It
consumes `<ns>.payments`, `<ns>.inventory` and `<ns>.shipping` (declared by the orchestrator)
in one process with the batched relay loop, and publishes each reply as a real worker would
(consumers.runtime / consumers.inbox): a valid envelope whose correlation id is the command's,
whose causation id is the command's message id, with the reply's deterministic message id,
to `<ns>.events` with the reply type as routing key. No database, no validation: cheap on
purpose, and checked against the contracts by unit tests instead.

With `--echo QUEUE --echo-to QUEUE` it answers each message of the first queue with a copy one
hop further on to the second, in the same batches: the bare relay's worker in the latency
section's loop (loop.py), so that the broker carries the same traffic, in the same bursts, as
around the orchestrator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from consumers.inbox import reply_message_id
from contracts import order
from sagaline.messaging.publish import amqp_message
from sagaline_tools.bench.loop import echo_to
from sagaline_tools.bench.relay import RelayStats, Route, enqueue, run_relay

STUB_QUEUES = ("payments", "inventory", "shipping")

Payload = dict[str, Any]
ReplyRule = tuple[str, Callable[[Payload], Payload]]

REPLIES: dict[str, ReplyRule] = {
    order.ProcessPayment.message_type: (
        order.PaymentProcessed.message_type,
        lambda p: {
            "order_id": p["order_id"],
            "payment_id": f"pay-{p['order_id']}"[:200],
            "amount_cents": p["amount_cents"],
        },
    ),
    order.RefundPayment.message_type: (
        order.PaymentRefunded.message_type,
        lambda p: {"order_id": p["order_id"], "amount_cents": 0},
    ),
    order.ReserveInventory.message_type: (
        order.InventoryReserved.message_type,
        lambda p: {"order_id": p["order_id"]},
    ),
    order.ReleaseInventory.message_type: (
        order.InventoryReleased.message_type,
        lambda p: {"order_id": p["order_id"]},
    ),
    order.CreateShipment.message_type: (
        order.OrderShipped.message_type,
        lambda p: {"order_id": p["order_id"], "tracking_number": f"trk-{p['order_id']}"[:200]},
    ),
    order.CancelShipment.message_type: (
        order.ShipmentCancelled.message_type,
        lambda p: {"order_id": p["order_id"]},
    ),
}


def build_reply(command_body: bytes, now: datetime) -> tuple[str, bytes, dict[str, str]] | None:
    """(reply type, reply envelope JSON, ids) for a command envelope; None for other types."""
    command = json.loads(command_body)
    rule = REPLIES.get(command.get("type", ""))
    if rule is None:
        return None
    reply_type, payload = rule
    command_id = uuid.UUID(command["message_id"])
    ids = {
        "message_id": str(reply_message_id(command_id)),
        "correlation_id": command["correlation_id"],
        "causation_id": command["message_id"],
    }
    envelope = {
        **ids,
        "type": reply_type,
        "schema_version": 1,
        "occurred_at": now.isoformat(),
        "payload": payload(command["payload"]),
    }
    return reply_type, json.dumps(envelope, separators=(",", ":")).encode(), ids


def reply_mapper(events: AbstractExchange) -> Callable[[AbstractIncomingMessage], Route | None]:
    def mapper(message: AbstractIncomingMessage) -> Route | None:
        built = build_reply(message.body, datetime.now(UTC))
        if built is None:
            return None
        reply_type, body, ids = built
        reply = amqp_message(
            body,
            message_id=ids["message_id"],
            correlation_id=ids["correlation_id"],
            message_type=reply_type,
            causation_id=ids["causation_id"],
        )
        return events, reply_type, reply

    return mapper


async def stub_main(args: argparse.Namespace) -> dict[str, Any]:
    stats = RelayStats()
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    connection = await aio_pika.connect(args.amqp_url)
    try:
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=args.prefetch)
        publish = await connection.channel(publisher_confirms=True)
        events = await publish.get_exchange(f"{args.namespace}.events", ensure=False)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        names = [args.echo] if args.echo else [f"{args.namespace}.{n}" for n in STUB_QUEUES]
        for name in names:
            queue = await consume.declare_queue(name, passive=True)
            await queue.consume(enqueue(inbox))
        sys.stdout.write(json.dumps({"ready": True}) + "\n")
        sys.stdout.flush()
        with contextlib.suppress(asyncio.CancelledError):
            await run_relay(
                inbox,
                (
                    echo_to(publish.default_exchange, args.echo_to)
                    if args.echo
                    else reply_mapper(events)
                ),
                batch=args.batch,
                max_wait=args.max_wait_ms / 1000,
                stats=stats,
            )
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    return {"replied": stats.relayed - stats.skipped, "skipped": stats.skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description="sagaline bench: stub order workers")
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--prefetch", type=int, default=128)
    parser.add_argument("--echo", metavar="QUEUE", help="answer this queue's messages (loop.py)")
    parser.add_argument("--echo-to", metavar="QUEUE", help="where --echo sends its answers")
    args = parser.parse_args()
    if bool(args.echo) != bool(args.echo_to):
        parser.error("--echo and --echo-to go together")
    import uvloop

    result = uvloop.run(stub_main(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
