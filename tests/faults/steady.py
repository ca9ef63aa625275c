"""Steady load for the failover scenarios, and what they measure with it: transitions since a
moment (saga.history), the longest stretch without one, processes that must not restart."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime

from sqlalchemy import text

from tests.faults.conftest import Scenario
from tests.faults.harness import eventually
from tests.faults.workload import Order, Shop


class SteadyShop:
    """Publishes orders at a steady rate, each until confirmed, until stopped."""

    def __init__(self, scenario: Scenario, shop: Shop, rate: float) -> None:
        self.scenario, self.shop, self.interval = scenario, shop, 1.0 / rate
        self.orders: list[Order] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def start_under_load(self, before: str, transitions: int = 30) -> None:
        """Start, and return once the load shows in saga.history (the fault comes after it)."""
        self.start()
        started = await now(self.scenario)
        await eventually(
            lambda: at_least(self.scenario, started, transitions),
            within=60,
            what=f"load before {before}",
        )

    async def stop(self) -> list[Order]:
        self._stop.set()
        assert self._task is not None
        await self._task
        return self.orders

    async def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            (order,) = self.scenario.workload.make(1)
            self.orders.append(order)
            await self.shop.send([order], reliably=True)
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def transitions_since(scenario: Scenario, since: datetime) -> list[datetime]:
    async with scenario.engine.connect() as conn:
        rows = await conn.scalars(
            text("SELECT at FROM saga.history WHERE at >= :since ORDER BY at"), {"since": since}
        )
        return list(rows)


async def now(scenario: Scenario) -> datetime:
    async with scenario.engine.connect() as conn:
        value = await conn.scalar(text("SELECT clock_timestamp()"))
    assert isinstance(value, datetime)
    return value


async def count_since(scenario: Scenario, since: datetime) -> int:
    async with scenario.engine.connect() as conn:
        value = await conn.scalar(
            text("SELECT count(*) FROM saga.history WHERE at >= :since"), {"since": since}
        )
    return int(value or 0)


async def at_least(scenario: Scenario, since: datetime, count: int) -> bool:
    return await count_since(scenario, since) >= count


def longest_gap(times: list[datetime]) -> float:
    return max(((b - a).total_seconds() for a, b in itertools.pairwise(times)), default=0)


def assert_never_restarted(scenario: Scenario, pids: dict[str, int]) -> None:
    h = scenario.harness
    for name, pid in pids.items():
        assert h.alive(name) and h.pid(name) == pid, (
            f"{name} exited during the failover:\n{h.process(name).log_tail()}"
        )
