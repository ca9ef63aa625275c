"""Scenario: PostgreSQL fails over under load. The primary of a streaming pair is stopped
immediately (a crash, for its clients), the standby is promoted, and the address the processes
use (DATABASE_URL) is repointed to it (tests/faults/standby.py).

What happens to in-flight work: a transaction open when the primary went away never committed
(its batch's deliveries were not acknowledged; the consumer holds them through the outage,
sagaline.db.hold_through_outage, and runs them again on the new primary); one that committed
was acknowledged by the primary only once the synchronous standby had it, so it is on the new
primary too (its deliveries' redeliveries are answered by the inboxes as duplicates). The
processes must ride it out without exiting, and the checker must find nothing lost and nothing
done twice. The report says how long the failover took and how long transitions stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sagaline.settings import Settings
from tests.faults.conftest import Scenario, open_scenario
from tests.faults.harness import _readyz, eventually
from tests.faults.private import PrivatePostgres
from tests.faults.standby import Repointer, make_standby, promote
from tests.faults.steady import (
    SteadyShop,
    assert_never_restarted,
    at_least,
    longest_gap,
    now,
    transitions_since,
)
from tests.faults.test_database_outage import holds, outage_outlasts_the_retry_ladder

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

DATABASE = "sagaline_failover"
RATE = 20.0


@dataclass
class Pair:
    primary: PrivatePostgres
    standby: PrivatePostgres
    address: Repointer

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.address.port}/{database}"


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    reason = PrivatePostgres.missing()
    if reason is not None:
        pytest.skip(f"no private PostgreSQL: {reason}")
    primary = await asyncio.to_thread(PrivatePostgres.create)
    standby: PrivatePostgres | None = None
    address = Repointer(primary.port)
    try:
        with (primary.data / "postgresql.conf").open("a") as conf:
            # Every commit waits for the standby: acknowledged means on both.
            conf.write("\nsynchronous_standby_names = '*'\n")
        await primary.start()
        standby = await asyncio.to_thread(make_standby, primary)
        with (standby.data / "postgresql.conf").open("a") as conf:
            # Once promoted it stands alone: waiting for a standby of its own would block.
            conf.write("\nsynchronous_standby_names = ''\n")
        await standby.start()
        await address.start()
        yield Pair(primary, standby, address)
    finally:
        await address.stop()
        await primary.destroy()
        if standby is not None:
            await standby.destroy()


async def test_the_primary_fails_over_to_its_standby_under_load(
    settings: Settings, pair: Pair, log_dir: Path, request: pytest.FixtureRequest
) -> None:
    base = settings.model_copy(update={"database_url": pair.url(DATABASE)})
    async with open_scenario(base, log_dir, request.node.name) as scenario:
        h = scenario.harness
        h.add_orchestrators(2)
        h.add_workers()
        await h.start_all()
        pids = {name: h.pid(name) for name in h.names}
        async with scenario.shop() as shop:
            steady = SteadyShop(scenario, shop, RATE)
            await steady.start_under_load("the failover")
            last_on_primary = await now(scenario)
            began = time.monotonic()
            await pair.primary.stop("immediate")
            # As a failover manager would, promote once the primary is known to be gone; by
            # then the processes hold what they were handling (the path under test).
            await eventually(
                lambda: noticed(scenario, "orchestrator-0"),
                within=30,
                what="the orchestrator to notice the primary gone",
            )
            held = holds(h.logs()["orchestrator-0"])
            await outage_outlasts_the_retry_ladder(scenario, "orchestrator-0", held)
            await promote(pair.standby)
            await pair.address.repoint(pair.standby.port)
            failover = time.monotonic() - began
            promoted_at = await now(scenario)  # the new primary's clock from here on
            await eventually(
                lambda: at_least(scenario, promoted_at, 150),
                within=90,
                what="transitions on the promoted standby",
            )
            orders = await steady.stop()
        since = await transitions_since(scenario, last_on_primary)
        stalled = longest_gap([last_on_primary, *since])
        scenario.report.notes.append(
            f"orders={len(orders)} at {RATE:.0f}/s; primary stopped, standby promoted and"
            f" repointed in {failover:.1f}s; transitions stopped {stalled:.1f}s;"
            f" shop publish attempts refused={shop.failed_attempts}"
        )
        assert_never_restarted(scenario, pids)
        await scenario.verify(within=120)


async def noticed(scenario: Scenario, name: str) -> bool:
    answer = await asyncio.to_thread(_readyz, scenario.harness.process(name))
    return "database unreachable" in answer
