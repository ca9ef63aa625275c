"""Scenario 6: RabbitMQ stopped and started under load, and connections closed under load.

Runs on a private RabbitMQ node (tests/faults/private.py), never the shared one. The processes
must ride out the outage without exiting: consumers and the relay reconnect with backoff, and
every message whose publish was confirmed reaches its end. The shop publishes with confirms
and re-sends (same message id) what was not confirmed, as a service with an outbox would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from sagaline.settings import Settings
from tests.faults.conftest import Scenario, open_scenario
from tests.faults.harness import eventually
from tests.faults.private import PrivateRabbit
from tests.faults.workload import Order

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
async def rabbit() -> AsyncIterator[PrivateRabbit]:
    reason = PrivateRabbit.missing()
    if reason is not None:
        pytest.skip(f"no private RabbitMQ node: {reason}")
    node = PrivateRabbit.create()
    try:
        await node.start()
        yield node
    finally:
        await node.destroy()


@pytest.fixture
async def on_rabbit(
    settings: Settings, rabbit: PrivateRabbit, log_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Scenario]:
    base = settings.model_copy(update={"amqp_url": rabbit.amqp_url})
    async with open_scenario(base, log_dir, request.node.name) as value:
        yield value


async def started(scenario: Scenario, orders: list[Order], at_least: int) -> None:
    """Wait until at least this many of the orders' sagas have started (load in flight)."""

    async def probe() -> bool:
        async with scenario.engine.connect() as conn:
            count = await conn.scalar(
                text("SELECT count(*) FROM saga.instances WHERE id = ANY(:ids)"),
                {"ids": [o.saga_id for o in orders]},
            )
        return int(count or 0) >= at_least

    await eventually(probe, within=60, what=f"{at_least} sagas to start")


def assert_never_restarted(scenario: Scenario, pids: dict[str, int]) -> None:
    h = scenario.harness
    for name, pid in pids.items():
        assert h.alive(name) and h.pid(name) == pid, (
            f"{name} exited during the outage:\n{h.process(name).log_tail()}"
        )


async def test_broker_stopped_and_started_under_load(
    on_rabbit: Scenario, rabbit: PrivateRabbit
) -> None:
    scenario = on_rabbit
    h = scenario.harness
    h.add_orchestrators()
    h.add_workers()
    await h.start_all()
    pids = {name: h.pid(name) for name in h.names}
    before = scenario.workload.make(20)
    during = scenario.workload.make(10)
    async with scenario.shop() as shop:
        await shop.send(before)
        await started(scenario, before, at_least=5)
        await rabbit.stop()
        # Publishing goes on while the broker is away: each publish is retried until confirmed.
        publishing = asyncio.create_task(shop.send(during, reliably=True))
        await rabbit.start()
        await publishing
    scenario.report.notes.append(f"shop publish attempts refused={shop.failed_attempts}")
    await scenario.wait_for_end(within=120)
    assert_never_restarted(scenario, pids)
    await scenario.verify()


async def test_connections_closed_under_load(on_rabbit: Scenario, rabbit: PrivateRabbit) -> None:
    scenario = on_rabbit
    h = scenario.harness
    h.add_orchestrators()
    h.add_workers()
    await h.start_all()
    pids = {name: h.pid(name) for name in h.names}
    orders = scenario.workload.make(30)
    closes = 3
    async with scenario.shop() as shop:
        publishing = asyncio.create_task(shop.send(orders, reliably=True))
        for i in range(1, closes + 1):
            await started(scenario, orders, at_least=8 * i)
            await rabbit.close_all_connections()
        await publishing
    scenario.report.notes.append(f"connections closed {closes} times")
    await scenario.wait_for_end(within=120)
    assert_never_restarted(scenario, pids)
    await scenario.verify()
