"""Hostile messages as any publisher on the broker can send them: hypothesis strategies over
bodies *and* AMQP headers and properties, and a publisher that sends them as drawn.

Every drawn message carries `x-fuzz-id` so it can be found again wherever it ends: applied (its
envelope's message id in the consumer's inbox) or parked (its copy keeps the header).
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, DeliveryMode
from hypothesis import strategies as st
from pamqp import encode

from contracts import order as o
from contracts.base import Message
from contracts.envelope import new_envelope
from contracts.topology import (
    H_ATTEMPT,
    H_ERROR,
    H_FIRST_FAILED_AT,
    H_ORIGINAL_QUEUE,
    H_REASON,
    H_REPLAY_COUNT,
)

FUZZ_ID = "x-fuzz-id"
FORGED_TIMESTAMP = "forged"
"""A timestamp past the year 9999 (pamqp decoded it by dropping the connection)."""

OUR_HEADERS = [H_ATTEMPT, H_REASON, H_ERROR, H_ORIGINAL_QUEUE, H_FIRST_FAILED_AT, H_REPLAY_COUNT]

BIGINT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["\u0000", "a\u0000b", "\U0001f680", "9" * 400])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

# What pamqp can put in a header table. Infinity is left out: RabbitMQ itself refuses such a
# publish (INTERNAL_ERROR), so no message carrying one can reach a consumer.
HEADER_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | BIGINT
    | st.floats(width=32, allow_nan=False, allow_infinity=False)
    | st.text(max_size=60)
    | st.binary(max_size=40)
    | st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
    ),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)
HEADERS = st.dictionaries(
    st.sampled_from(OUR_HEADERS) | st.text(min_size=1, max_size=20),
    HEADER_VALUES,
    max_size=5,
)
SHORT_TEXT = st.text(max_size=60)


@dataclass(frozen=True)
class Hostile:
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    timestamp: datetime | str | None
    fuzz_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def _payment() -> Message:
    return o.ProcessPayment(
        order_id=f"fuzz-{uuid.uuid4().hex[:8]}",
        customer_id="fuzz-customer",
        amount_cents=100,
        currency="EUR",
        card_token="tok_ok",
    )


def _order() -> Message:
    return o.OrderSubmitted(
        order_id=f"fuzz-{uuid.uuid4().hex[:8]}",
        customer_id="fuzz-customer",
        amount_cents=100,
        currency="EUR",
        card_token="tok_ok",
        lines=(o.OrderLine(sku="fuzz-sku", quantity=1),),
        ship_to=o.Address(country="DE", postcode="10115", city="Berlin"),
    )


@st.composite
def bodies(draw: st.DrawFn, for_worker: bool) -> bytes:
    """A valid envelope, one with a field replaced by any JSON value, any JSON, or any bytes."""
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    payload = _payment() if for_worker else _order()
    envelope = json.loads(new_envelope(payload, correlation_id=uuid.uuid4()).to_json())
    if kind == "mutated":
        target = envelope["payload"] if draw(st.booleans()) else envelope
        key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(JSON_VALUES)
    return json.dumps(envelope).encode()


@st.composite
def hostile_messages(draw: st.DrawFn, for_worker: bool = False) -> Hostile:
    properties: dict[str, Any] = {
        "content_type": draw(
            st.none()
            | st.just("application/json")
            | st.sampled_from(["text/plain", ""])
            | SHORT_TEXT
        ),
        "message_id": draw(st.none() | SHORT_TEXT),
        "correlation_id": draw(st.none() | SHORT_TEXT),
        "type": draw(st.none() | SHORT_TEXT),
        "app_id": draw(st.none() | SHORT_TEXT),
        "priority": draw(st.none() | st.integers(min_value=0, max_value=255)),
    }
    timestamp = draw(
        st.none()
        | st.just(FORGED_TIMESTAMP)
        | st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
        )
    )
    return Hostile(draw(bodies(for_worker)), draw(HEADERS), properties, timestamp)


@contextmanager
def forged_timestamps() -> Iterator[None]:
    """Let this process's publisher write a timestamp past the year 9999, as any other client
    can (pamqp itself would refuse to encode one)."""
    strict = encode.METHODS["timestamp"]
    encode.METHODS["timestamp"] = lambda value: struct.pack(">Q", 2**63)
    try:
        yield
    finally:
        encode.METHODS["timestamp"] = strict


async def publish_hostile(channel: AbstractChannel, queue: str, message: Hostile) -> bool:
    """Publish straight to a work queue, as a misbehaving service would; False when the broker
    refused the message (it then never reached the consumer)."""
    forged = message.timestamp == FORGED_TIMESTAMP
    amqp = aio_pika.Message(
        message.body,
        headers={**message.headers, FUZZ_ID: message.fuzz_id},
        delivery_mode=DeliveryMode.PERSISTENT,
        timestamp=datetime.now(UTC) if forged else message.timestamp,  # type: ignore[arg-type]
        **message.properties,
    )
    try:
        if forged:
            with forged_timestamps():
                await channel.default_exchange.publish(amqp, routing_key=queue)
        else:
            await channel.default_exchange.publish(amqp, routing_key=queue)
    except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.AMQPError):
        return False  # the broker refused it
    except (TypeError, ValueError, OverflowError):
        return False  # the client cannot encode what was drawn (e.g. a float32 overflow)
    return True
