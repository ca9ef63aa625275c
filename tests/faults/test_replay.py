"""Scenario 10: messages parked by a handler bug are replayed after the fix, once each.

The payments worker runs with the fault switch on ProcessPayment (SAGALINE_FAIL_COMMANDS), so
every charge fails transiently, climbs the retry ladder and is parked as retries-exhausted.
The bug is then "fixed" (payments restarts without the switch) and an operator replays the
parking queue with sagaline.messaging.parking.ParkingQueues.replay: each charge takes effect
exactly once and every saga reaches its expected end.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from contracts.topology import ParkReason
from sagaline.messaging.parking import ParkingQueues, Selection
from tests.faults.checker import CONSUMERS, queue_depth
from tests.faults.conftest import Scenario
from tests.faults.harness import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

ORDERS = 10


async def test_replay_after_the_fix_takes_effect_exactly_once(scenario: Scenario) -> None:
    h = scenario.harness
    h.add_orchestrators()
    h.add_workers()
    await h.start_all(env={"payments": {"SAGALINE_FAIL_COMMANDS": "ProcessPayment"}})
    orders = scenario.workload.make(ORDERS)
    async with scenario.shop() as shop:
        await shop.send(orders)
    topology = scenario.settings.topology
    parking_queue = topology.parking_queue("payments")
    ids = [o.saga_id for o in orders]
    inputs = [e.message_id for o in orders for e in o.inputs]

    async def charges_parked() -> int | None:
        async with scenario.engine.connect() as conn:
            processed = await conn.scalar(
                text("SELECT count(*) FROM saga.inbox WHERE message_id = ANY(:ids)"),
                {"ids": inputs},
            )
            charges = await conn.scalar(
                text(
                    "SELECT count(*) FROM saga.outbox WHERE saga_id = ANY(:ids)"
                    " AND message_type = 'ProcessPayment'"
                ),
                {"ids": ids},
            )
        parked = await queue_depth(scenario.connection, parking_queue)
        done = processed == len(inputs) and charges and parked == charges
        return int(charges) if done else None

    charges = await eventually(charges_parked, within=60, what="every charge to be parked")
    await h.restart("payments", {"SAGALINE_FAIL_COMMANDS": ""})
    parking = ParkingQueues(scenario.connection, topology, CONSUMERS)
    replayed = await parking.replay(
        parking_queue, Selection(reason=ParkReason.RETRIES_EXHAUSTED.value), dry_run=False
    )
    assert len(replayed) == charges
    assert all(p.message_type == "ProcessPayment" for p in replayed)
    scenario.report.notes.append(f"replayed={len(replayed)}")
    await scenario.verify()
