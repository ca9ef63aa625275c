"""Scenario 3: the same event delivered three times, in sequence and concurrently to different
orchestrator replicas; every copy after the first is absorbed by the inbox.

Three orchestrator processes consume one queue. In sequence: each order's inputs are published,
and the second and third copies follow once the first was processed (its inbox row exists);
stored worker replies are published twice more after their sagas finished. Concurrently: every
input is published three times back to back, so the copies reach different replicas at once and
race on the inbox's primary key.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from consumers.payments import tables as pay
from sagaline.messaging.parsing import parse_body
from tests.faults.checker import queue_depth, wait_for_end
from tests.faults.conftest import Scenario
from tests.faults.harness import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

ORDERS = 10
REPLICAS = 3


async def test_same_event_three_times_in_sequence_and_concurrently(scenario: Scenario) -> None:
    h = scenario.harness
    h.add_orchestrators(REPLICAS)
    h.add_workers()
    await h.start_all()
    topology = scenario.settings.topology
    orchestrator_queue = topology.work_queue("orchestrator")

    sequential = scenario.workload.make(ORDERS)
    concurrent = scenario.workload.make(ORDERS)
    async with scenario.shop() as shop:
        await shop.send(sequential)
        inputs = [e for o in sequential for e in o.inputs]
        for _ in range(2):
            await wait_inbox(scenario, [e.message_id for e in inputs])
            for envelope in inputs:
                await shop.publish(envelope)

            async def drained() -> bool:
                return await queue_depth(scenario.connection, orchestrator_queue) == 0

            await eventually(drained, within=30, what="the copies to be delivered")

        for order in concurrent:
            for envelope in order.inputs:
                await shop.publish(envelope, copies=3)

        # Replies too: once a saga finished, its stored payment reply arrives twice more.
        await wait_for_end(scenario.engine, sequential, within=60)
        async with scenario.engine.connect() as conn:
            bodies = (
                await conn.execute(
                    text(
                        f"SELECT reply_body FROM {pay.SCHEMA}.inbox WHERE message_id IN"
                        " (SELECT message_id FROM saga.outbox WHERE saga_id = ANY(:ids)"
                        " AND message_type = 'ProcessPayment')"
                    ),
                    {"ids": [o.saga_id for o in sequential]},
                )
            ).scalars()
            replies = [parse_body(bytes(b), "application/json", 1 << 20) for b in bodies]
        assert replies
        for reply in replies:
            await shop.publish(reply, copies=2)
    scenario.report.notes.append(f"test re-sent {len(replies) * 2} stored replies")
    await scenario.verify()


async def wait_inbox(scenario: Scenario, message_ids: list[object]) -> None:
    async def probe() -> bool:
        async with scenario.engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT count(*) FROM saga.inbox WHERE message_id = ANY(:ids)"),
                {"ids": message_ids},
            )
        return bool(found == len(message_ids))

    await eventually(probe, within=30, what="the first copies to be processed")
