"""declare_at_startup: a process that starts while a queue's home node is away waits for it.

The broker is faked here (the control flow is what is tested, with an injected clock); the
cluster scenario in tests/faults/test_cluster.py runs it against a real node that is down.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity

from sagaline.messaging.declare import declare_at_startup

AWAY = "NOT_FOUND - home node 'rabbit@b' of durable queue 'shop.payments.parking' in vhost '/'"
AWAY += " is down or inaccessible"


class FakeChannel:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class FakeConnection:
    def __init__(self) -> None:
        self.channels: list[FakeChannel] = []

    async def channel(self) -> FakeChannel:
        self.channels.append(FakeChannel())
        return self.channels[-1]


class Broker:
    """Answers each declaration with the next scripted refusal, then declares."""

    def __init__(self, *refusals: Exception) -> None:
        self.refusals = list(refusals)
        self.declared_on: list[object] = []

    async def declare(self, channel: AbstractChannel) -> None:
        if self.refusals:
            raise self.refusals.pop(0)
        self.declared_on.append(channel)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


async def _start(broker: Broker, clock: Clock, within: float) -> FakeConnection:
    connection = FakeConnection()
    await declare_at_startup(
        cast(AbstractConnection, connection),
        broker.declare,
        within=within,
        sleep=clock.sleep,
        clock=clock,
    )
    return connection


async def test_declares_again_while_the_home_node_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker(ChannelNotFoundEntity(AWAY), ChannelNotFoundEntity(AWAY))
    clock = Clock()
    with caplog.at_level(logging.WARNING, logger="sagaline.declare"):
        connection = await _start(broker, clock, within=60)
    assert clock.pauses == [0.5, 1.0]
    # Each attempt on a channel of its own (a refusal closes the channel), all closed after.
    assert len(connection.channels) == 3
    assert all(channel.closed for channel in connection.channels)
    assert broker.declared_on == [connection.channels[-1]]
    replies = [cast(Any, record).broker_reply for record in caplog.records]
    assert len(replies) == 2
    assert "shop.payments.parking" in replies[0]
    assert "is down or inaccessible" in replies[0]


async def test_the_pause_doubles_up_to_five_seconds() -> None:
    broker = Broker(*(ChannelNotFoundEntity(AWAY) for _ in range(7)))
    clock = Clock()
    await _start(broker, clock, within=60)
    assert clock.pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


async def test_gives_up_when_the_node_stays_away_past_the_limit() -> None:
    broker = Broker(*(ChannelNotFoundEntity(AWAY) for _ in range(10)))
    clock = Clock()
    with pytest.raises(ChannelNotFoundEntity, match="home node"):
        await _start(broker, clock, within=3)
    # 0.5 + 1 slept; a pause of 2 would end past the 3 s limit, so the third refusal stands.
    assert clock.pauses == [0.5, 1.0]
    assert len(broker.refusals) == 7


@pytest.mark.parametrize(
    "refusal",
    [
        ChannelNotFoundEntity("NOT_FOUND - no exchange 'shop.events' in vhost '/'"),
        ConnectionError("connection reset"),
    ],
)
async def test_any_other_refusal_stops_the_start_at_once(refusal: Exception) -> None:
    clock = Clock()
    with pytest.raises(type(refusal)):
        await _start(Broker(refusal), clock, within=60)
    assert clock.pauses == []


async def test_a_limit_of_zero_declares_once() -> None:
    clock = Clock()
    with pytest.raises(ChannelNotFoundEntity):
        await _start(Broker(ChannelNotFoundEntity(AWAY)), clock, within=0)
    assert clock.pauses == []
