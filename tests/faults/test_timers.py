"""Scenario 9: a thousand timers come due while every orchestrator is stopped.

The sagas are started in-process through the real store with a clock an hour in the past, so
their 30 s step timers are all overdue, with due times in an order unrelated to creation order.
A tenth of them have their timer cancelled first, in both ways a workflow cancels one: fifty
get a declined payment reply (the saga ends, its timers go with it), fifty a cancellation and
then a successful payment reply (the step timer is cancelled while the saga goes on, now
compensating under a compensation timer due hours later). Then one orchestrator starts alone:
each remaining step timer fires exactly once, in due order (the order of the timer steps in the
history follows due_at), and no cancelled timer ever fires. Finally the workers start: every
timed-out saga compensates its payment and ends failed, every cancelled one ends cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from consumers.inbox import reply_message_id
from contracts import order as o
from contracts.envelope import new_envelope
from orchestrator.engine import EngineConfig, Incoming
from orchestrator.store.saga_store import Clock, SagaStore
from orchestrator.workflows import WORKFLOWS
from tests.faults.conftest import Scenario
from tests.faults.harness import eventually
from tests.faults.workload import CANCELLED, DECLINED, FAILED, SUCCESS, Order

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

SAGAS = 1_000
STEP_TIMEOUT = timedelta(seconds=30)
MIX = [SUCCESS] * 19 + [DECLINED]  # one in twenty is declined: its timer goes as the saga ends
CANCEL_MID_FLIGHT = 20
"""One in twenty (a successful case) is cancelled and then paid: its timer is cancelled."""


async def test_a_thousand_overdue_timers_fire_once_in_due_order(scenario: Scenario) -> None:
    orders = scenario.workload.make(SAGAS, MIX)
    for order in orders:
        order.states = FAILED
    base = datetime.now(UTC) - timedelta(hours=1)
    offsets = list(range(SAGAS))
    random.shuffle(offsets)
    started = {
        o.saga_id: base + timedelta(milliseconds=10 * k)
        for o, k in zip(orders, offsets, strict=True)
    }
    cancelled = await _start_sagas(scenario, orders, started)

    h = scenario.harness
    (orchestrator,) = h.add_orchestrators()
    workers = h.add_workers()
    # Rounds of 100: the timers fire over several transactions, so the order *between*
    # batches (the claim's ORDER BY) is tested as well as the order inside one.
    timer_env = {"SAGALINE_TIMER_POLL_SECONDS": "0.2", "SAGALINE_TIMER_BATCH_SIZE": "100"}
    await h.start_all([orchestrator], env={orchestrator: timer_env})
    ids = [o.saga_id for o in orders]

    async def all_fired() -> bool:
        async with scenario.engine.connect() as conn:
            left = await conn.scalar(
                text(
                    "SELECT count(*) FROM saga.timers WHERE saga_id = ANY(:ids)"
                    " AND name = 'step-timeout'"
                ),
                {"ids": ids},
            )
        return bool(left == 0)

    await eventually(all_fired, within=120, what="every overdue timer to fire", interval=0.5)
    async with scenario.engine.connect() as conn:
        fired = (
            await conn.execute(
                text(
                    "SELECT saga_id, at FROM saga.history WHERE saga_id = ANY(:ids)"
                    " AND message_type = 'timer:step-timeout' ORDER BY id"
                ),
                {"ids": ids},
            )
        ).all()
    fired_order = [row.saga_id for row in fired]
    assert len(fired_order) == len(set(fired_order)) == SAGAS - len(cancelled)
    assert not cancelled & set(fired_order), "a cancelled timer fired"
    # Timers fired in one transaction share its time (`at`): count inversions inside such a
    # batch and between batches separately, so a failure says which ordering broke.
    steps = [(row.at, started[row.saga_id] + STEP_TIMEOUT) for row in fired]
    inside = sum(1 for a, b in itertools.pairwise(steps) if a[0] == b[0] and b[1] < a[1])
    across = sum(1 for a, b in itertools.pairwise(steps) if a[0] != b[0] and b[1] < a[1])
    assert across == 0, f"{across} batches of timers fired before an earlier-due batch"

    await h.start_all(workers)
    scenario.report.notes.append(f"timers fired={len(fired_order)} cancelled={len(cancelled)}")
    await scenario.verify(within=150)
    # One batch is one transaction; its steps (and so its history) must still follow due_at:
    # two due timers of one saga in one batch must fire in due order. (DELETE ... RETURNING
    # returns heap order, not the subquery's ORDER BY: SagaStore._fire sorts what it claimed.)
    assert inside == 0, f"{inside} timers fired before an earlier-due one inside one batch"


def fixed_clock(at: datetime) -> Clock:
    return lambda: at


async def _start_sagas(
    scenario: Scenario, orders: list[Order], started: dict[uuid.UUID, datetime]
) -> set[uuid.UUID]:
    """Start every saga at its own time, then cancel the timer of a tenth of them: half by a
    declined payment reply, half by a cancellation followed by a successful payment reply.
    Replies carry the ids the payments worker will use, so its real replies are duplicates."""
    topology = scenario.settings.topology
    config = EngineConfig(step_timeout=STEP_TIMEOUT)
    # The compensation a mid-flight cancel starts gets its timer from this config: far enough
    # out that it never falls due during the test.
    patient = EngineConfig(step_timeout=timedelta(hours=3))
    cancelled: set[uuid.UUID] = set()
    queue: asyncio.Queue[tuple[int, Order]] = asyncio.Queue()
    for index, order in enumerate(orders):
        queue.put_nowait((index, order))

    async def work() -> None:
        while not queue.empty():
            index, order = queue.get_nowait()
            at = started[order.saga_id]
            store = SagaStore(scenario.engine, topology, config, WORKFLOWS, clock=fixed_clock(at))
            result = await store.handle(Incoming.from_envelope(order.submitted))
            assert result.decision is not None
            (command,) = result.decision.outgoing
            reply_id = reply_message_id(command.message_id)
            later = SagaStore(
                scenario.engine,
                topology,
                patient,
                WORKFLOWS,
                clock=fixed_clock(at + timedelta(1e-3)),
            )
            if order.case is DECLINED:
                reply: Any = o.PaymentFailed(order_id=order.order_id, reason="card declined")
            elif index % CANCEL_MID_FLIGHT == CANCEL_MID_FLIGHT // 2:
                cancellation = order.cancellation("timer test")
                await later.handle(Incoming.from_envelope(cancellation))
                order.inputs.append(cancellation)
                order.states = CANCELLED
                reply = o.PaymentProcessed(
                    order_id=order.order_id,
                    payment_id=f"pay-{order.order_id}",
                    amount_cents=order.amount_cents,
                )
            else:
                continue
            envelope = new_envelope(
                reply,
                correlation_id=order.saga_id,
                causation_id=command.message_id,
                message_id=reply_id,
            )
            await later.handle(Incoming.from_envelope(envelope))
            scenario.extra_inputs.append(reply_id)
            cancelled.add(order.saga_id)

    await asyncio.gather(*(work() for _ in range(4)))
    return cancelled
