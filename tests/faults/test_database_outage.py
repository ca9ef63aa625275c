"""Scenario 7: PostgreSQL restarted under load (pg_ctl -m immediate) and backends terminated
(pg_terminate_backend) under load.

Runs on a private cluster (tests/faults/private.py), never the shared server. While the
database is away, consumers hold their deliveries and retry in place (sagaline.messaging.
delivery) instead of sending them through the retry ladder: no valid message may end in a
parking queue because the database was briefly gone, and no process may exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from sagaline.settings import Settings
from tests.faults.checker import CONSUMERS, queue_depths
from tests.faults.conftest import Scenario, open_scenario
from tests.faults.harness import _readyz, eventually
from tests.faults.private import PrivatePostgres
from tests.faults.test_broker_outage import assert_never_restarted, started

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

DATABASE = "sagaline_faults"


@pytest.fixture(scope="module")
async def postgres() -> AsyncIterator[PrivatePostgres]:
    reason = PrivatePostgres.missing()
    if reason is not None:
        pytest.skip(f"no private PostgreSQL cluster: {reason}")
    cluster = await asyncio.to_thread(PrivatePostgres.create)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.destroy()


async def test_database_restarted_and_backends_terminated_under_load(
    settings: Settings, postgres: PrivatePostgres, log_dir: Path, request: pytest.FixtureRequest
) -> None:
    base = settings.model_copy(update={"database_url": postgres.url(DATABASE)})
    async with open_scenario(base, log_dir, request.node.name) as scenario:
        database = make_url(scenario.settings.database_url).database
        assert database is not None
        h = scenario.harness
        (orchestrator,) = h.add_orchestrators()
        h.add_workers()
        await h.start_all()
        pids = {name: h.pid(name) for name in h.names}
        before, during, after = (scenario.workload.make(n) for n in (20, 10, 10))
        async with scenario.shop() as shop:
            await shop.send(before)
            await started(scenario, before, at_least=5)
            await postgres.stop("immediate")

            async def noticed() -> bool:
                answer = await asyncio.to_thread(_readyz, h.process(orchestrator))
                return "database unreachable" in answer

            await eventually(noticed, within=30, what="the orchestrator to notice the outage")
            held_before = holds(h.logs()[orchestrator])
            await shop.send(during)  # delivered to consumers that must hold them
            await outage_outlasts_the_retry_ladder(scenario, orchestrator, held_before)
            await postgres.start()
            await started(scenario, during, at_least=3)
            terminated = await postgres.terminate_backends(database)
            assert terminated > 0, "no sagaline connection to terminate: the scenario is hollow"
            await shop.send(after)
        scenario.report.notes.append(f"backends terminated={terminated}")
        await scenario.wait_for_end(within=120)
        assert_never_restarted(scenario, pids)
        await scenario.verify()  # every parking queue empty: nothing parked for the outage


HOLDING = "database unavailable; holding"
HOLDS_NEEDED = 3
"""Holds back off 0.5, 1, 2 s: three of them outlast the suite's retry ladder (0.2 + 0.4 s)."""


def holds(log: str) -> int:
    return log.count(HOLDING)


async def outage_outlasts_the_retry_ladder(
    scenario: Scenario, orchestrator: str, held_before: int
) -> None:
    """Keep the database away until the orchestrator has held the new deliveries through
    several backoffs, longer than a retried message would take to be parked, or until
    something was parked (the checker then names it)."""
    h = scenario.harness
    topology = scenario.settings.topology
    parking = [topology.parking_queue(consumer) for consumer in CONSUMERS]

    async def long_enough() -> bool:
        if holds(h.logs()[orchestrator]) - held_before >= HOLDS_NEEDED:
            return True
        depths = await queue_depths(scenario.connection, parking)
        return any(depth for depth in depths.values())

    await eventually(long_enough, within=60, what="the outage to outlast the retry ladder")
