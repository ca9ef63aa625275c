#!/usr/bin/env python3
"""Publish one event to sagaline with nothing but aio-pika (no sagaline import).

    pip install aio-pika
    python publish.py OrderSubmitted ../payloads/OrderSubmitted.json

The payload file holds the event's fields (see /schemas/<type>.json on the orchestrator, or
contracts/schema/ in the repository); this script wraps them in the envelope, publishes to the
events exchange with the type as routing key, waits for the broker's confirm, and prints the ids
as one JSON line. Environment: AMQP_URL (default amqp://guest:guest@localhost:5672/) and
SAGALINE_NAMESPACE (default sagaline).

Exit codes: 0 published, 1 the broker refused it (no exchange, no queue bound, refused publish),
2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity, DeliveryError, PublishError


def uuid7() -> uuid.UUID:
    """A version 7 UUID (RFC 9562): 48 bits of Unix milliseconds, then random bits. Ids made
    later sort later, so sagaline's inbox and saga tables add them on their indexes' newest
    pages instead of random ones (about a third of the write-ahead log at a million sagas)."""
    octets = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    octets[6] = (octets[6] & 0x0F) | 0x70
    octets[8] = (octets[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(octets))


def envelope(
    message_type: str, payload: dict[str, Any], correlation_id: str, message_id: str
) -> dict[str, Any]:
    """The JSON body sagaline reads: ids, type, schema version, time, and the event itself."""
    return {
        "message_id": message_id,
        "correlation_id": correlation_id,
        "causation_id": None,
        "type": message_type,
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": payload,
    }


async def publish(url: str, namespace: str, body: dict[str, Any]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        # Confirms: publish() returns once the broker has the message; on_return_raises: a
        # message no queue takes (the orchestrator never ran here) is an error, not silence.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(f"{namespace}.events", ensure=True)
        message = aio_pika.Message(
            json.dumps(body).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=body["message_id"],
            correlation_id=body["correlation_id"],
            type=body["type"],
        )
        await exchange.publish(message, routing_key=body["type"], mandatory=True)


def read_payload(source: str) -> dict[str, Any]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    payload = json.loads(text)
    if not isinstance(payload, dict):
        raise ValueError("the payload must be a JSON object")
    return payload


def main() -> int:
    parser = argparse.ArgumentParser(description="Publish one event to sagaline.")
    parser.add_argument("type", help="message type, e.g. OrderSubmitted")
    parser.add_argument("payload", help="file with the payload as a JSON object ('-': stdin)")
    parser.add_argument(
        "--correlation-id",
        help="saga id: omit for an event that starts a saga, give it for one that steers it",
    )
    parser.add_argument(
        "--message-id", help="reuse a message id (publishing it again changes nothing)"
    )
    args = parser.parse_args()
    try:
        payload = read_payload(args.payload)
        correlation_id = str(uuid.UUID(args.correlation_id or str(uuid7())))
        message_id = str(uuid.UUID(args.message_id or str(uuid7())))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    body = envelope(args.type, payload, correlation_id, message_id)
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    namespace = os.environ.get("SAGALINE_NAMESPACE", "sagaline")
    try:
        asyncio.run(publish(url, namespace, body))
    except ChannelNotFoundEntity:
        print(f"error: no exchange {namespace}.events (is sagaline running?)", file=sys.stderr)
        return 1
    except DeliveryError:
        print(f"error: no queue takes {args.type} (is the orchestrator running?)", file=sys.stderr)
        return 1
    except (AMQPError, PublishError, OSError) as exc:
        print(f"error: publish failed: {exc!r}", file=sys.stderr)
        return 1
    print(
        json.dumps({"type": args.type, "message_id": message_id, "correlation_id": correlation_id})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
