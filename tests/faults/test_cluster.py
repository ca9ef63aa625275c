"""Scenario: a three-node RabbitMQ cluster, the node leading the orchestrator's and a worker's
quorum queues killed (kill -9) under load, restarted later.

Private nodes on free ports (tests/faults/cluster.py). Every process gets all three URLs in
AMQP_URL; the queues are declared through the first node, so their leaders start there, with
replicas on all three. The shop publishes orders at a steady rate through the kill, the
failover and the restart; the processes must ride it out without exiting (the connections on
the killed node move to the next one, the quorum queues elect new leaders), and the checker
must find nothing lost and nothing done twice. The report says how long throughput stopped:
the longest stretch without any saga transition once the node was killed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from contracts.topology import ORCHESTRATOR
from sagaline.settings import Settings
from tests.faults.cluster import Cluster, three_nodes
from tests.faults.conftest import Scenario, open_scenario
from tests.faults.harness import eventually
from tests.faults.workload import Order, Shop

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

RATE = 20.0
"""Orders per second the shop publishes while the node dies and comes back."""
WORKER = "payments"


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    reason = Cluster.missing()
    if reason is not None:
        pytest.skip(f"no private RabbitMQ cluster: {reason}")
    async with three_nodes() as value:
        yield value


@pytest.fixture
async def on_cluster(
    settings: Settings, cluster: Cluster, log_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Scenario]:
    base = settings.model_copy(update={"amqp_url": cluster.amqp_url})
    async with open_scenario(base, log_dir, request.node.name) as value:
        yield value


class SteadyShop:
    """Publishes orders at a steady rate, each until confirmed, until stopped."""

    def __init__(self, scenario: Scenario, shop: Shop, rate: float) -> None:
        self.scenario, self.shop, self.interval = scenario, shop, 1.0 / rate
        self.orders: list[Order] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

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


async def test_the_node_leading_the_queues_killed_under_load_and_restarted(
    on_cluster: Scenario, cluster: Cluster
) -> None:
    scenario = on_cluster
    h = scenario.harness
    h.add_orchestrators(2)
    h.add_workers()
    await h.start_all()
    pids = {name: h.pid(name) for name in h.names}
    topology = scenario.settings.topology
    orchestrator_queue = topology.work_queue(ORCHESTRATOR)
    worker_queue = topology.work_queue(WORKER)
    for queue in (orchestrator_queue, worker_queue):
        members = await cluster.members_of(queue)
        assert members == {n.node for n in cluster.nodes}, f"{queue} has replicas on {members}"
    leaders = await cluster.leaders([orchestrator_queue, worker_queue])
    victim = cluster.node(leaders[orchestrator_queue])
    assert leaders[worker_queue] == victim.node, f"leaders differ: {leaders}"

    async with scenario.shop() as shop:
        steady = SteadyShop(scenario, shop, RATE)
        steady.start()
        started = await now(scenario)
        await eventually(
            lambda: _at_least(scenario, started, 30), within=60, what="load before the kill"
        )
        killed_at = await now(scenario)
        cluster.kill(victim)
        # Throughput is back once transitions flow again at the shop's pace.
        await eventually(
            lambda: _at_least(scenario, killed_at, 60), within=90, what="transitions after the kill"
        )
        new_leaders = await cluster.leaders([orchestrator_queue, worker_queue])
        assert victim.node not in new_leaders.values(), new_leaders
        await cluster.restart(victim)
        rejoined = await cluster.members()
        assert victim.node in rejoined, rejoined
        back_at = await now(scenario)
        await eventually(
            lambda: _at_least(scenario, back_at, 30), within=60, what="load after the restart"
        )
        orders = await steady.stop()
    stalled = _longest_gap([killed_at, *await transitions_since(scenario, killed_at)])
    scenario.report.notes.append(
        f"orders={len(orders)} at {RATE:.0f}/s; killed {victim.node.split('@')[0]} (leader of"
        f" {ORCHESTRATOR} and {WORKER}); throughput interrupted {stalled:.1f}s;"
        f" shop publish attempts refused={shop.failed_attempts}"
    )
    assert_never_restarted(scenario, pids)
    await scenario.verify(within=120)


async def _at_least(scenario: Scenario, since: datetime, count: int) -> bool:
    return await count_since(scenario, since) >= count


def _longest_gap(times: list[datetime]) -> float:
    return max(((b - a).total_seconds() for a, b in itertools.pairwise(times)), default=0)


def assert_never_restarted(scenario: Scenario, pids: dict[str, int]) -> None:
    h = scenario.harness
    for name, pid in pids.items():
        assert h.alive(name) and h.pid(name) == pid, (
            f"{name} exited during the failover:\n{h.process(name).log_tail()}"
        )
