"""The bare relay's latency run as a loop with the traffic of the orchestrator's run.

In the orchestrator's latency run, an order enters once from the paced publisher and comes
back three times as a stub worker's reply: of every four events the orchestrator takes, one is
paced and three arrive in the bursts the stub answers a batch of commands with, and the fourth
event of an order (OrderShipped) causes no command. The bare relay is measured in the same
loop: the publisher offers a quarter of the rate as fresh messages (hop 1) to queue A, the
relay copies A -> B, an echo process answers each copy back to A one hop further on, and the
relay takes the last hop's arrival without a copy. Only arrivals that were copied are timed,
as only events that caused a command are on the orchestrator's side.

The hop count rides in a header of our own bench traffic (HOP_HEADER).
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from sagaline_tools.bench.relay import Mapper, Route

HOP_HEADER = "x-bench-hop"


def hop_of(message: AbstractIncomingMessage) -> int:
    """Which arrival of its loop this is (1 for a fresh message)."""
    value = (message.headers or {}).get(HOP_HEADER, 1)
    return value if isinstance(value, int) else 1


def forwarded(message: AbstractIncomingMessage, hop: int | None) -> aio_pika.Message:
    """A persistent copy of `message`, carrying `hop` unless it is None (no loop)."""
    headers = dict(message.headers or {})
    if hop is not None:
        headers[HOP_HEADER] = hop
    return aio_pika.Message(
        body=message.body,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        headers=headers,
        app_id=message.app_id,
    )


def copy_until(target: AbstractExchange, key: str, hops: int) -> Mapper:
    """The relay's mapper: a copy of every arrival before the `hops`-th (0: of every one,
    as it arrived: the throughput baseline reads no hop and adds none)."""

    def plain(message: AbstractIncomingMessage) -> Route:
        return target, key, forwarded(message, None)

    if not hops:
        return plain

    def mapper(message: AbstractIncomingMessage) -> Route | None:
        hop = hop_of(message)
        if hop >= hops:
            return None
        return target, key, forwarded(message, hop)

    return mapper


def echo_to(target: AbstractExchange, key: str) -> Mapper:
    """The echo's mapper: each message back one hop further on, as a worker's reply."""

    def mapper(message: AbstractIncomingMessage) -> Route:
        return target, key, forwarded(message, hop_of(message) + 1)

    return mapper
