"""Approval SLA timers of the document saga on the real store, with an injected clock.

The saga reaches awaiting_approval through the store (the change event, then the documents
worker's DraftGenerated reply: tier 2, SLA 48 h, escalation window 24 h, data steward then DBA).
The clock moves instead of the tests sleeping; TimerLoop fires what is due at the clock's time.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import documents as d
from contracts.envelope import new_envelope
from orchestrator.engine import EngineConfig, Incoming, Outcome
from orchestrator.store.saga_store import SagaStore
from orchestrator.store.tables import history, instances, outbox, timers
from orchestrator.timers import TimerLoop
from orchestrator.workflows import WORKFLOWS
from sagaline.settings import Settings
from tests.integration.support import FakeClock, reply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

STEP_TIMEOUT = timedelta(minutes=2)
SLA = timedelta(hours=48)
ESCALATION = timedelta(hours=24)
STEWARD, DBA = "data_steward", "dba"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _store(engine: AsyncEngine, settings: Settings, clock: FakeClock) -> SagaStore:
    return SagaStore(
        engine, settings.topology, EngineConfig(step_timeout=STEP_TIMEOUT), WORKFLOWS, clock=clock
    )


@pytest.fixture
def store(engine: AsyncEngine, settings: Settings, clock: FakeClock) -> SagaStore:
    return _store(engine, settings, clock)


def _ids(saga_id: uuid.UUID) -> dict[str, str]:
    return {"document_id": f"doc-{saga_id.hex[:12]}", "change_id": "c1"}


async def _row(engine: AsyncEngine, saga_id: uuid.UUID) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(instances).where(instances.c.id == saga_id))).one()


async def _awaiting_approval(store: SagaStore, engine: AsyncEngine) -> uuid.UUID:
    saga_id = uuid.uuid4()
    change = d.DocumentChangeDetected(
        **_ids(saga_id),
        title="orders table",
        metadata=d.DocumentMetadata(object_type="table"),
        quality_score=0.5,
    )
    await store.handle(Incoming.from_envelope(new_envelope(change, correlation_id=saga_id)))
    (generate,) = (await _row(engine, saga_id)).runtime["outstanding"]
    draft = d.DraftGenerated(
        **_ids(saga_id),
        draft_version=1,
        tier=2,
        sla_hours=48,
        escalation_hours=24,
        tier_roles=(STEWARD, DBA),
        quality_score=0.5,
        sensitive=False,
    )
    await store.handle(reply(draft, saga_id, uuid.UUID(generate)))
    assert (await _row(engine, saga_id)).state == "awaiting_approval"
    return saga_id


async def _approve(store: SagaStore, saga_id: uuid.UUID, role: str) -> Outcome:
    answer = d.ApprovalGranted(**_ids(saga_id), role=role, approver=f"{role}-person")
    result = await store.handle(
        Incoming.from_envelope(new_envelope(answer, correlation_id=saga_id))
    )
    assert result.decision is not None
    return result.decision.outcome


async def _timer_names(engine: AsyncEngine, saga_id: uuid.UUID) -> dict[str, Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(timers.c.name, timers.c.due_at).where(timers.c.saga_id == saga_id)
        )
        return {name: due_at for name, due_at in rows}


async def _commands(engine: AsyncEngine, saga_id: uuid.UUID) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.message_type).where(outbox.c.saga_id == saga_id).order_by(outbox.c.id)
        )
        return list(rows.scalars())


async def _fired_for(engine: AsyncEngine, saga_id: uuid.UUID) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(history.c.message_type)
            .where(history.c.saga_id == saga_id, history.c.actor == "timer")
            .order_by(history.c.id)
        )
        return list(rows.scalars())


async def test_sla_expiry_sends_escalate_approval_and_enters_escalated(
    store: SagaStore, engine: AsyncEngine, clock: FakeClock
) -> None:
    saga_id = await _awaiting_approval(store, engine)
    assert (await _timer_names(engine, saga_id)) == {"approval-sla": clock.now + SLA}
    loop = TimerLoop(store)

    clock.advance(SLA - timedelta(seconds=1))
    await loop.fire_due()
    assert await _fired_for(engine, saga_id) == []

    clock.advance(timedelta(seconds=2))
    await loop.fire_due()

    row = await _row(engine, saga_id)
    assert row.state == "escalated"
    assert row.data["escalated"] is True
    assert await _fired_for(engine, saga_id) == ["timer:approval-sla"]
    assert (await _commands(engine, saga_id))[-1] == "EscalateApproval"
    # The second deadline runs from the escalation.
    assert (await _timer_names(engine, saga_id)) == {"escalation-deadline": clock.now + ESCALATION}

    # Approvals still count after escalation.
    assert await _approve(store, saga_id, STEWARD) is Outcome.TRANSITIONED
    assert await _approve(store, saga_id, DBA) is Outcome.TRANSITIONED
    assert (await _row(engine, saga_id)).state == "approved"
    assert set(await _timer_names(engine, saga_id)) == {"step-timeout"}


async def test_the_last_approval_just_before_the_deadline_cancels_the_escalation(
    store: SagaStore, engine: AsyncEngine, clock: FakeClock
) -> None:
    saga_id = await _awaiting_approval(store, engine)
    clock.advance(timedelta(hours=10))
    await _approve(store, saga_id, STEWARD)
    clock.advance(SLA - timedelta(hours=10) - timedelta(seconds=1))
    await _approve(store, saga_id, DBA)

    clock.advance(timedelta(seconds=2))  # past the SLA, within the next step's own timeout
    await TimerLoop(store).fire_due()

    assert (await _row(engine, saga_id)).state == "approved"
    assert await _fired_for(engine, saga_id) == []
    assert "EscalateApproval" not in await _commands(engine, saga_id)
    assert set(await _timer_names(engine, saga_id)) == {"step-timeout"}


async def test_no_decision_by_the_escalation_deadline_rejects_with_compensation(
    store: SagaStore, engine: AsyncEngine, clock: FakeClock
) -> None:
    saga_id = await _awaiting_approval(store, engine)
    loop = TimerLoop(store)
    clock.advance(SLA + timedelta(seconds=1))
    await loop.fire_due()
    clock.advance(ESCALATION + timedelta(seconds=1))
    await loop.fire_due()

    row = await _row(engine, saga_id)
    assert row.state == "compensating"
    assert row.runtime["compensation_target"] == "rejected"
    assert row.runtime["reason"] == "no decision by the escalation deadline"
    assert await _fired_for(engine, saga_id) == [
        "timer:approval-sla",
        "timer:escalation-deadline",
    ]
    assert (await _commands(engine, saga_id))[-1] == "ReleaseApprover"


async def test_a_deadline_passed_while_stopped_fires_once_after_restart(
    settings: Settings, engine: AsyncEngine, clock: FakeClock
) -> None:
    before = _store(engine, settings, clock)
    saga_id = await _awaiting_approval(before, engine)

    # The orchestrator is down past the SLA; a new store and loop start with the later clock.
    clock.advance(SLA + timedelta(hours=5))
    loop = TimerLoop(_store(engine, settings, clock))
    await loop.fire_due()
    await loop.fire_due()

    assert await _fired_for(engine, saga_id) == ["timer:approval-sla"]
    assert (await _row(engine, saga_id)).state == "escalated"
    async with engine.connect() as conn:
        escalations = await conn.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.saga_id == saga_id, outbox.c.message_type == "EscalateApproval")
        )
    assert escalations == 1
    # The escalation window counts from when the timer actually fired (after the restart).
    assert (await _timer_names(engine, saga_id)) == {"escalation-deadline": clock.now + ESCALATION}


async def test_answers_that_decide_nothing_are_recorded_as_ignored(
    store: SagaStore, engine: AsyncEngine
) -> None:
    saga_id = await _awaiting_approval(store, engine)
    assert await _approve(store, saga_id, "compliance") is Outcome.IGNORED
    assert await _approve(store, saga_id, STEWARD) is Outcome.TRANSITIONED
    assert await _approve(store, saga_id, STEWARD) is Outcome.IGNORED

    async with engine.connect() as conn:
        notes = (
            await conn.execute(
                select(history.c.outcome, history.c.note)
                .where(history.c.saga_id == saga_id, history.c.message_type == "ApprovalGranted")
                .order_by(history.c.id)
            )
        ).all()
    assert [outcome for outcome, _ in notes] == ["ignored", "transitioned", "ignored"]
    assert "role not required" in notes[0][1]
    assert "role already answered" in notes[2][1]
    assert (await _row(engine, saga_id)).version == 3
