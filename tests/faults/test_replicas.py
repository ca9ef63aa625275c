"""Scenario 5: three orchestrator replicas consume one queue under load, with races on the same
sagas forced: an order and three cancellations (and a second submission with its own message
id) published back to back for one saga reach different replicas at once.

Conflicts must be detected and retried (the replicas' sagaline_concurrency_conflicts_total is
above zero) and no update may be lost: transition versions stay 1..n (the checker), and once a
cancellation was accepted by a saga, the saga ends cancelled.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from tests.faults.checker import wait_for_end
from tests.faults.conftest import Scenario
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
    await scenario.verify(conflicts=conflicts)


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


def _outcomes(rows: list[object]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        outcome = str(getattr(row, "outcome", ""))
        counts[outcome] = counts.get(outcome, 0) + 1
    return dict(sorted(counts.items()))
