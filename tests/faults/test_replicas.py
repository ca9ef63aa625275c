"""Scenario 5: three orchestrator replicas consume one queue under load, with races on the same
sagas forced: an order and three cancellations (and a second submission with its own message
id) published back to back for one saga reach different replicas at once.

Conflicts must be detected and retried (the replicas' sagaline_concurrency_conflicts_total is
above zero) and no update may be lost: transition versions stay 1..n (the checker), and once a
cancellation was accepted by a saga, the saga ends cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from sqlalchemy import text

from tests.faults.checker import wait_for_end
from tests.faults.conftest import Scenario
from tests.faults.harness import eventually
from tests.faults.workload import SUCCESS, Order

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

REPLICAS = 3
PLAIN = 30
RACED = 15
CONFLICTS = "sagaline_concurrency_conflicts_total"


def raced(order: Order) -> Order:
    """Submission, three cancellations and a second submission under a new message id."""
    again = order.submitted.model_copy(update={"message_id": uuid.uuid4()})
    order.inputs = [order.submitted, *(order.cancellation(f"race {i}") for i in range(3)), again]
    # A cancellation that overtakes every step cancels; one that arrives after the saga
    # completed changes nothing. Which one happened is checked below from the history.
    order.states = frozenset({"cancelled", "completed"})
    return order


async def test_three_replicas_race_on_the_same_sagas(scenario: Scenario) -> None:
    h = scenario.harness
    replicas = h.add_orchestrators(REPLICAS)
    h.add_workers()
    await h.start_all()
    conflicts = 0.0
    async with scenario.shop() as shop:
        for _ in range(3):  # more rounds only while no conflict was observed yet
            plain = scenario.workload.make(PLAIN)
            races = [raced(o) for o in scenario.workload.make(RACED, [SUCCESS])]
            await shop.send([*races, *plain])
            await wait_for_end(scenario.engine, scenario.workload.orders, within=90)
            conflicts = await h.metric_total(replicas, CONFLICTS)
            if conflicts > 0:
                break
    assert conflicts > 0, "no concurrency conflict was forced; the race scenario proved nothing"
    await cancellations_respected(scenario)

    # Races on updates: sagas that exist and wait (their workers are stopped) each get three
    # cancellations back to back, which round-robin delivery hands to different replicas:
    # all three decide from the same version, the compare-and-set lets one through.
    workers = [name for name in h.names if name not in replicas]
    for worker in workers:
        await h.stop(worker)
    async with scenario.shop() as shop:
        waiting = scenario.workload.make(RACED, [SUCCESS])
        await shop.send(waiting)
        await sagas_started(scenario, waiting)
        before = await h.metric_total(replicas, CONFLICTS)
        for order in waiting:
            cancels = [order.cancellation(f"update race {i}") for i in range(3)]
            order.inputs.extend(cancels)
            order.states = frozenset({"cancelled"})
            for cancel in cancels:
                await shop.publish(cancel)
        await accepted_one_cancellation_each(scenario, waiting)
    update_conflicts = await h.metric_total(replicas, CONFLICTS) - before
    assert update_conflicts > 0, "no update race was forced; the compare-and-set went untested"
    await h.start_all(workers)
    await wait_for_end(scenario.engine, scenario.workload.orders, within=90)
    scenario.report.notes.append(f"update conflicts={update_conflicts:.0f}")
    await scenario.verify(conflicts=conflicts + update_conflicts)


async def sagas_started(scenario: Scenario, orders: list[Order]) -> None:
    async def probe() -> bool:
        async with scenario.engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT count(*) FROM saga.instances WHERE id = ANY(:ids)"),
                {"ids": [o.saga_id for o in orders]},
            )
        return bool(found == len(orders))

    await eventually(probe, within=30, what="every waiting saga to start")


async def accepted_one_cancellation_each(scenario: Scenario, orders: list[Order]) -> None:
    """Every cancellation handled (an inbox row each), and each saga took one of them."""
    ids = [o.saga_id for o in orders]
    cancels = [e.message_id for o in orders for e in o.inputs[1:]]

    async def probe() -> bool:
        async with scenario.engine.connect() as conn:
            handled = await conn.scalar(
                text("SELECT count(*) FROM saga.inbox WHERE message_id = ANY(:ids)"),
                {"ids": cancels},
            )
        return bool(handled == len(cancels))

    await eventually(probe, within=30, what="every cancellation to be handled")
    async with scenario.engine.connect() as conn:
        flagged = await conn.scalar(
            text(
                "SELECT count(*) FROM saga.instances WHERE id = ANY(:ids)"
                " AND (data->>'cancel_requested')::boolean"
            ),
            {"ids": ids},
        )
    assert flagged == len(orders), f"{len(orders) - flagged} sagas lost their cancellation"


async def cancellations_respected(scenario: Scenario) -> None:
    """A saga that accepted a cancellation (a transition, or its start) must end cancelled."""
    raced_orders = [o for o in scenario.workload.orders if len(o.inputs) > 2]
    cancels = {e.message_id: o for o in raced_orders for e in o.inputs[1:4]}
    async with scenario.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT h.message_id, h.outcome, i.state FROM saga.history h"
                    " JOIN saga.instances i ON i.id = h.saga_id WHERE h.message_id = ANY(:ids)"
                ),
                {"ids": list(cancels)},
            )
        ).all()
    lost = [
        (str(r.message_id), r.outcome, r.state)
        for r in rows
        if r.outcome in ("started", "transitioned") and r.state != "cancelled"
    ]
    assert not lost, f"accepted cancellations lost: {lost}"
    scenario.report.notes.append(
        "raced sagas: " + ", ".join(f"{o}={n}" for o, n in _outcomes(rows).items())
    )


def _outcomes(rows: Sequence[object]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        outcome = str(getattr(row, "outcome", ""))
        counts[outcome] = counts.get(outcome, 0) + 1
    return dict(sorted(counts.items()))
