"""Scenario 4: out-of-order, duplicate and late replies, against the real store and workers.

A property test drives one order saga at a time through SagaStore.handle on the real database
and the real worker handlers (in-process, each command in its own transaction with the worker's
inbox, exactly as the worker runtime does). Hypothesis chooses every interleaving: which pending
message the orchestrator gets next, when a worker executes which command (so replies arrive in
any order, and compensations may overtake the step they undo), when a timer fires, and which
message or command is delivered again. Whatever the order, the checker's database invariants
hold once everything was delivered: each message processed once, versions without gaps, every
command executed once, and ledgers that agree with the saga's final state.

Explicit cases: a reply from an earlier attempt (after the step timed out, or after the saga
moved on) is fenced as stale and changes nothing; events for a finished saga change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.registry import WORKERS
from consumers.runtime import WorkerProcess
from consumers.testing import offline_worker
from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from orchestrator.engine import EngineConfig, Incoming, Outcome
from orchestrator.store.saga_store import SagaStore, StepResult
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_engine
from sagaline.messaging.parsing import parse_body
from sagaline.settings import Settings
from tests.conftest import own_database
from tests.faults.checker import WORKER_OF, Checker, Report
from tests.faults.harness import ORDER_WORKERS
from tests.faults.workload import DECLINED, OUT_OF_STOCK, SUCCESS, UNSHIPPABLE, Order, Workload

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

MAX_STEPS = 120
MAX_REDELIVERIES = 4
FINAL = {"completed", "failed", "cancelled", "compensation_failed"}


@dataclass
class Env:
    settings: Settings
    engine: AsyncEngine
    store: SagaStore
    workers: dict[str, WorkerProcess]
    report: Report = field(default_factory=lambda: Report("reply order (property)"))

    async def execute(self, command: Envelope[Any]) -> Envelope[Any]:
        """One delivery of a command to its worker: inbox, effect and stored reply, one commit."""
        ((stored, _),) = await self.workers[WORKER_OF[command.type]].handle_batch([(command, 1)])
        return parse_body(stored.body, "application/json", 1 << 20)

    async def deliver(self, envelope: Envelope[Any]) -> StepResult:
        return await self.store.handle(Incoming.from_envelope(envelope))

    async def take_outbox(self, saga_id: uuid.UUID) -> list[Envelope[Any]]:
        """What the relay would publish now (marked published): the saga's new commands."""
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        "UPDATE saga.outbox SET published_at = now() WHERE saga_id = :id"
                        " AND published_at IS NULL RETURNING id, routing_key, body"
                    ),
                    {"id": saga_id},
                )
            ).all()
        return [
            parse_body(bytes(r.body), "application/json", 1 << 20)
            for r in sorted(rows, key=lambda r: r.id)
            if r.routing_key in WORKER_OF
        ]

    async def timers(self, saga_id: uuid.UUID) -> list[tuple[str, uuid.UUID]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT name, message_id FROM saga.timers WHERE saga_id = :id ORDER BY name"),
                {"id": saga_id},
            )
            return [(r.name, r.message_id) for r in rows]

    async def state(self, saga_id: uuid.UUID) -> tuple[str, int, bool]:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT state, version, finished_at IS NOT NULL AS done"
                        " FROM saga.instances WHERE id = :id"
                    ),
                    {"id": saga_id},
                )
            ).one()
        return row.state, row.version, row.done


@pytest.fixture(scope="module")
async def env(settings: Settings) -> AsyncIterator[Env]:
    # A database of its own: this module leaves outbox rows unpublished (no relay runs), and
    # another test's orchestrator would try to publish them to exchanges that are gone.
    async with own_database(settings) as own:
        engine = create_engine(own, pool_size=4)
        store = SagaStore(
            engine, own.topology, EngineConfig(step_timeout=timedelta(hours=1)), WORKFLOWS
        )
        workers = {name: offline_worker(WORKERS[name], engine) for name in ORDER_WORKERS}
        try:
            yield Env(own, engine, store, workers)
        finally:
            await engine.dispose()


async def new_order(env: Env, case: Any, cancel: bool) -> tuple[Workload, Order]:
    workload = Workload(f"p{uuid.uuid4().hex[:8]}")
    await workload.seed(env.engine)
    (order,) = workload.make(1, [case])
    if cancel:
        order.inputs.append(order.cancellation())
    return workload, order


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_interleaving_of_replies_keeps_every_invariant(env: Env, data: Any) -> None:
    case = data.draw(st.sampled_from([SUCCESS, DECLINED, OUT_OF_STOCK, UNSHIPPABLE]), "case")
    cancel = data.draw(st.booleans(), "cancellation")
    workload, order = await new_order(env, case, cancel)
    order.states = frozenset(FINAL)  # asserted below; the checker ties ledgers to the state
    saga_id = order.saga_id
    pending: list[Envelope[Any]] = list(order.inputs)  # to the orchestrator, in any order
    commands: list[Envelope[Any]] = []  # published, not yet executed by their worker
    delivered: list[Envelope[Any]] = []
    executed: list[Envelope[Any]] = []
    redeliveries = 0
    fired = False
    for _ in range(MAX_STEPS):
        if delivered:
            commands += await env.take_outbox(saga_id)
        timers = await env.timers(saga_id) if delivered else []
        actions: list[tuple[str, Any]] = [("deliver", e) for e in pending]
        actions += [("execute", c) for c in commands]
        actions += [("timer", t) for t in timers]
        if redeliveries < MAX_REDELIVERIES:
            actions += [("redeliver", e) for e in delivered[-3:]]
            actions += [("re-execute", c) for c in executed[-2:]]
        if not pending and not commands:
            state, _, done = await env.state(saga_id)
            if done:
                break
            assert timers, f"saga stuck in {state} with nothing pending and no timer"
        kind, item = data.draw(st.sampled_from(actions), "action")
        if kind == "deliver":
            pending.remove(item)
            await env.deliver(item)
            delivered.append(item)
        elif kind == "execute":
            commands.remove(item)
            pending.append(await env.execute(item))
            executed.append(item)
        elif kind == "timer":
            name, message_id = item
            await env.store.handle(
                Incoming.timer(saga_id, name, message_id), actor="timer", timer_guard=True
            )
            fired = True
        elif kind == "redeliver":
            redeliveries += 1
            result = await env.deliver(item)
            assert result.duplicate, f"a second delivery of {item.type} was processed again"
        else:
            redeliveries += 1
            reply = await env.execute(item)  # the worker answers with the reply it stored
            pending.append(reply)
    else:
        pytest.fail(f"no end after {MAX_STEPS} steps")

    state, _, _ = await env.state(saga_id)
    assert state in FINAL
    if not fired:
        allowed = set(case.states) | ({"cancelled"} if cancel else set())
        assert state in allowed, (case.kind, cancel, state)
    checker = Checker(env.settings, env.engine, workload, env.report)
    await checker.check_database()
    checker.raise_problems(f"{case.kind}, cancel={cancel}, timer fired={fired}: ")


async def test_a_reply_from_an_earlier_attempt_is_fenced_as_stale(env: Env) -> None:
    # The payment step timed out: the saga compensates; the late charge reply changes nothing.
    _, order = await new_order(env, SUCCESS, cancel=False)
    await env.deliver(order.submitted)
    (charge,) = await env.take_outbox(order.saga_id)
    ((name, timer_id),) = [t for t in await env.timers(order.saga_id) if t[0] == "step-timeout"]
    await env.store.handle(
        Incoming.timer(order.saga_id, name, timer_id), actor="timer", timer_guard=True
    )
    before = await env.state(order.saga_id)
    (refund,) = await env.take_outbox(order.saga_id)
    late = await env.deliver(await env.execute(charge))
    assert late.decision is not None and late.decision.outcome is Outcome.STALE
    assert await env.state(order.saga_id) == before == ("compensating", 2, False)
    assert await env.take_outbox(order.saga_id) == []
    await env.deliver(await env.execute(refund))
    assert (await env.state(order.saga_id))[0] == "failed"

    # The saga moved on; a re-built reply to its first command (new message id) is stale too.
    _, order = await new_order(env, SUCCESS, cancel=False)
    await env.deliver(order.submitted)
    (charge,) = await env.take_outbox(order.saga_id)
    reply = await env.execute(charge)
    await env.deliver(reply)
    before = await env.state(order.saga_id)
    again = reply.model_copy(update={"message_id": uuid.uuid4()})
    result = await env.deliver(again)
    assert result.decision is not None and result.decision.outcome is Outcome.STALE
    assert await env.state(order.saga_id) == before == ("awaiting_inventory", 2, False)
    assert [c.type for c in await env.take_outbox(order.saga_id)] == ["ReserveInventory"]


async def test_events_for_a_finished_saga_change_nothing(env: Env) -> None:
    _, order = await new_order(env, DECLINED, cancel=False)
    await env.deliver(order.submitted)
    (charge,) = await env.take_outbox(order.saga_id)
    reply = await env.execute(charge)
    await env.deliver(reply)
    finished = await env.state(order.saga_id)
    assert finished[0] == "failed" and finished[2]
    late = [
        order.cancellation(),
        reply.model_copy(update={"message_id": uuid.uuid4()}),
        new_envelope(
            o.PaymentProcessed(order_id=order.order_id, payment_id="pay-x", amount_cents=1),
            correlation_id=order.saga_id,
            causation_id=charge.message_id,
        ),
    ]
    for envelope in late:
        result = await env.deliver(envelope)
        assert result.decision is not None and result.decision.outcome is Outcome.FINISHED
    assert await env.state(order.saga_id) == finished
    assert await env.take_outbox(order.saga_id) == []
