"""The intake hands a batch's commands to the relay and goes on: `hand_off` returns before the
publish is confirmed, holds no more than `dispatches_in_flight` at once, and stopping the relay
waits for those in flight (the real publish and mark: tests/integration/test_relay.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, cast

import pytest

from orchestrator.relay import OutboxRelay

pytestmark = pytest.mark.timeout(10)


class GatedRelay(OutboxRelay):
    """A relay whose dispatches wait for the test to let them finish."""

    def __init__(self, **options: Any) -> None:
        super().__init__(cast(Any, None), cast(Any, None), commands_exchange="commands", **options)
        self.gate = asyncio.Event()
        self.started: list[Sequence[uuid.UUID]] = []
        self.finished: list[Sequence[uuid.UUID]] = []

    async def dispatch(self, message_ids: Sequence[uuid.UUID]) -> int:
        self.started.append(message_ids)
        await self.gate.wait()
        self.finished.append(message_ids)
        return len(message_ids)


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_hand_off_returns_before_the_dispatch_is_done() -> None:
    relay = GatedRelay()
    ids = [uuid.uuid4()]
    await relay.hand_off(ids)
    await _turns()
    assert relay.started == [ids] and relay.finished == []
    relay.gate.set()
    await relay.stop()
    assert relay.finished == [ids]


async def test_past_the_limit_hand_off_waits_for_a_dispatch_to_finish() -> None:
    relay = GatedRelay(dispatches_in_flight=2)
    first, second, third = ([uuid.uuid4()] for _ in range(3))
    await relay.hand_off(first)
    await relay.hand_off(second)
    waiting = asyncio.create_task(relay.hand_off(third))
    await _turns()
    assert not waiting.done() and relay.started == [first, second]
    relay.gate.set()
    await asyncio.wait_for(waiting, timeout=5)
    await relay.stop()
    assert relay.finished == [first, second, third]


async def test_stopping_waits_for_dispatches_in_flight_and_cancels_them_past_its_timeout() -> None:
    relay = GatedRelay()
    ids = [uuid.uuid4()]
    await relay.hand_off(ids)
    stopping = asyncio.create_task(relay.stop())
    await _turns()
    assert not stopping.done()  # the channel stays open while a publish is under way
    relay.gate.set()
    await asyncio.wait_for(stopping, timeout=5)
    assert relay.finished == [ids]

    stuck = GatedRelay()
    stuck.stop_timeout = 0.05
    await stuck.hand_off(ids)
    await asyncio.wait_for(stuck.stop(), timeout=5)
    assert stuck.finished == []  # cancelled: its rows stay in the outbox for a restart


async def test_nothing_to_hand_off_starts_nothing() -> None:
    relay = GatedRelay()
    await relay.hand_off([])
    await _turns()
    assert relay.started == []
    await relay.stop()
