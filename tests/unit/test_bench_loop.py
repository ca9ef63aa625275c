"""sagaline bench, latency section: the bare relay runs in the orchestrator run's loop (one
arrival in four fresh, the rest echoed back, the last of each loop taken without a copy), and
only the arrivals it copied are timed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from sagaline_tools.bench.baseline import relay_messages
from sagaline_tools.bench.config import STEPS_PER_ORDER
from sagaline_tools.bench.loop import HOP_HEADER, copy_until, echo_to, hop_of
from sagaline_tools.bench.relay import RelayStats, Timings, run_relay


@dataclass
class Delivery:
    """What the mappers and the relay loop read of an incoming message."""

    body: bytes
    headers: dict[str, Any]
    message_id: str = "m-1"
    correlation_id: str = "c-1"
    type: str = "BenchRelayed"
    content_type: str = "application/json"
    app_id: str = "sagaline"
    acks: list[bool] = field(default_factory=list)

    async def ack(self, multiple: bool = False) -> None:
        self.acks.append(multiple)


def arriving(message: aio_pika.Message) -> AbstractIncomingMessage:
    """`message` as the next process receives it."""
    delivery = Delivery(
        body=message.body,
        headers=dict(message.headers),
        message_id=message.message_id or "",
        correlation_id=message.correlation_id or "",
    )
    return cast(AbstractIncomingMessage, delivery)


EXCHANGE = cast(AbstractExchange, object())


def test_a_fresh_message_arrives_four_times_and_is_copied_three_times() -> None:
    (fresh,) = relay_messages(1, looped=True)
    relay, echo = copy_until(EXCHANGE, "B", STEPS_PER_ORDER), echo_to(EXCHANGE, "A")
    arrivals, copies = [], []
    message: AbstractIncomingMessage | None = arriving(fresh)
    while message is not None:
        arrivals.append(hop_of(message))
        route = relay(message)
        if route is None:
            break
        _, key, copy = route
        assert key == "B"
        assert copy.body == fresh.body and copy.message_id == fresh.message_id
        assert copy.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        copies.append(copy.headers[HOP_HEADER])
        answered = echo(arriving(copy))
        assert answered is not None  # the echo answers every copy
        _, back_to, answer = answered
        assert back_to == "A"
        message = arriving(answer)
    assert arrivals == [1, 2, 3, 4]
    assert copies == [1, 2, 3]


def test_without_a_loop_every_message_is_copied() -> None:
    relay = copy_until(EXCHANGE, "B", 0)
    for message in relay_messages(3):
        assert HOP_HEADER not in message.headers
        assert relay(arriving(message)) is not None
    late = arriving(next(iter(relay_messages(1, looped=True))))
    cast(Delivery, late).headers[HOP_HEADER] = 9
    assert relay(late) is not None


class Target:
    def __init__(self) -> None:
        self.published: list[aio_pika.Message] = []

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        self.published.append(message)


async def test_the_relay_times_only_what_it_copied_and_acks_everything() -> None:
    target = Target()
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    timings = Timings()
    deliveries = []
    for hop in (1, 4, 2, 4, 3):  # two loops' last arrivals among three to copy
        delivery = arriving(next(iter(relay_messages(1, looped=True))))
        cast(Delivery, delivery).headers[HOP_HEADER] = hop
        timings.arrived[id(delivery)] = 0.0
        inbox.put_nowait(delivery)
        deliveries.append(delivery)

    stats = await run_relay(
        inbox,
        copy_until(cast(AbstractExchange, target), "B", STEPS_PER_ORDER),
        batch=64,
        max_wait=0.0,
        stats=RelayStats(),
        stop_after=5,
        timings=timings,
    )

    assert [m.headers[HOP_HEADER] for m in target.published] == [1, 2, 3]
    assert (stats.relayed, stats.skipped) == (5, 2)
    assert len(timings.stages) == 3
    assert timings.arrivals == [0.0, 0.0, 0.0]  # when each timed copy's original arrived
    assert timings.arrived == {}  # the absorbed ones are forgotten too
    assert cast(Delivery, deliveries[-1]).acks == [True]  # one multiple ack for the batch
