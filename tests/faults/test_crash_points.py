"""Scenarios 1 and 2: a process dies at a crash point; restarted without it, nothing is lost
and nothing happens twice.

The orchestrator and the order workers run as real processes. Each phase restarts one of them
with SAGALINE_CRASH_AT set, sends ten orders, waits for the crash (exit code 86), restarts it
without the setting, and checks the phase's orders against the database invariants; the full
checker (queues, parking, ledgers) runs at the end. Phases share one set of processes to keep
the suite's run time bounded; each phase's check names its crash point when it fails.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from tests.faults.conftest import Scenario
from tests.faults.harness import eventually
from tests.faults.workload import DECLINED, FAILED, OUT_OF_STOCK, SUCCESS, UNSHIPPABLE, Order

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

PER_PHASE = 10
COMPENSATION_FAILED = frozenset({"compensation_failed"})

ORCHESTRATOR_POINTS = [
    # Inside the step's transaction: it rolls back; the broker redelivers the message.
    "orchestrator.before_commit:5",
    # Committed, not acknowledged: the redelivery finds the inbox row and is only acked.
    "orchestrator.after_commit_before_ack:5",
    # The relay published a batch but did not mark it: it is published again (same ids).
    "orchestrator.after_publish_before_mark:2",
]
WORKER_POINTS = [
    # The charge and its stored reply committed; the reply was never published.
    "worker.after_commit_before_reply:4",
    # The reply was published; the command was never acknowledged.
    "worker.before_ack:4",
]


async def test_orchestrator_crash_points(scenario: Scenario) -> None:
    h = scenario.harness
    (orchestrator,) = h.add_orchestrators()
    workers = h.add_workers()
    await h.start_all(env={orchestrator: {"SAGALINE_CRASH_AT": ORCHESTRATOR_POINTS[0]}})
    async with scenario.shop() as shop:
        for phase, crash_at in enumerate(ORCHESTRATOR_POINTS):
            if phase:
                await h.restart(orchestrator, {"SAGALINE_CRASH_AT": crash_at})
            orders = scenario.workload.make(PER_PHASE)
            await shop.send(orders)
            await h.wait_crash(orchestrator, within=45)
            await h.restart(orchestrator)
            await scenario.settle(orders, crash_at)

        # orchestrator.timer_after_fire: due timers' steps commit, then the process dies.
        # The orchestrator runs alone with a 1 s step timeout (so also a 1 s compensation
        # timeout): nobody answers ProcessPayment, the step timers fire, the process dies right
        # after that commit. Restarted with the normal timeout and still alone, it fires every
        # other due timer once and never those again: sagas whose step timer fired before the
        # crash have their 1 s compensation timer due and end compensation_failed; the others
        # wait (60 s) for their refund, which the workers, started last, confirm.
        for worker in workers:
            await h.stop(worker)
        short = {"SAGALINE_STEP_TIMEOUT_SECONDS": "1", "SAGALINE_TIMER_POLL_SECONDS": "0.2"}
        crash = {"SAGALINE_CRASH_AT": "orchestrator.timer_after_fire:1"}
        await h.restart(orchestrator, short | crash)
        orders = scenario.workload.make(8, [SUCCESS, DECLINED, OUT_OF_STOCK, UNSHIPPABLE])
        await shop.send(orders)
        await h.wait_crash(orchestrator, within=45)
    fired_before = await sagas_in(scenario, orders, "compensating")
    assert fired_before, "the crash came before any timer fired"
    for order in orders:
        order.states = COMPENSATION_FAILED if order.saga_id in fired_before else FAILED
    await h.restart(orchestrator, {"SAGALINE_TIMER_POLL_SECONDS": "0.2"})
    await no_timer_due(scenario, orders, finished=fired_before)
    await h.start_all(workers)
    await scenario.settle(orders, "orchestrator.timer_after_fire:1")
    scenario.report.notes.append(f"timers fired before the timer crash={len(fired_before)}")
    await scenario.verify()


async def test_payments_worker_crash_points(scenario: Scenario) -> None:
    h = scenario.harness
    h.add_orchestrators()
    h.add_workers()
    await h.start_all(env={"payments": {"SAGALINE_CRASH_AT": WORKER_POINTS[0]}})
    async with scenario.shop() as shop:
        for phase, crash_at in enumerate(WORKER_POINTS):
            if phase:
                await h.restart("payments", {"SAGALINE_CRASH_AT": crash_at})
            orders = scenario.workload.make(PER_PHASE)
            await shop.send(orders)
            await h.wait_crash("payments", within=45)
            await h.restart("payments")
            await scenario.settle(orders, crash_at)
    await scenario.verify()


async def sagas_in(scenario: Scenario, orders: list[Order], state: str) -> set[uuid.UUID]:
    async with scenario.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM saga.instances WHERE id = ANY(:ids) AND state = :state"),
            {"ids": [o.saga_id for o in orders], "state": state},
        )
        return set(rows.scalars())


async def no_timer_due(scenario: Scenario, orders: list[Order], finished: set[uuid.UUID]) -> None:
    ids = [o.saga_id for o in orders]

    async def probe() -> bool:
        async with scenario.engine.connect() as conn:
            due = await conn.scalar(
                text(
                    "SELECT count(*) FROM saga.timers WHERE saga_id = ANY(:ids) AND due_at <= now()"
                ),
                {"ids": ids},
            )
            done = await conn.scalar(
                text(
                    "SELECT count(*) FROM saga.instances WHERE id = ANY(:ids)"
                    " AND finished_at IS NOT NULL"
                ),
                {"ids": list(finished)},
            )
        return bool(due == 0 and done == len(finished))

    await eventually(probe, within=30, what="every due timer to fire")
