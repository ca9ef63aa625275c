"""`sagaline timers list|cancel|reschedule` on real sagas: what is listed, what fires after a
cancel or a reschedule, the history entry each action writes, and the refusals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.engine import EngineConfig, Incoming
from orchestrator.store.saga_store import SagaStore
from orchestrator.store.tables import history, instances, timers
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from tests.conftest import own_database
from tests.integration.support import FakeClock, order_submitted
from tests.integration.test_admin import cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
async def own(settings: Settings) -> AsyncIterator[Settings]:
    async with own_database(settings, step_timeout_seconds=600.0) as value:
        yield value


@pytest.fixture
async def db(own: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(own.sqlalchemy_url)
    yield engine
    await engine.dispose()


def store(db: AsyncEngine, own: Settings, clock: FakeClock) -> SagaStore:
    config = EngineConfig(step_timeout=timedelta(minutes=10))
    return SagaStore(db, own.topology, config, WORKFLOWS, clock=clock)


async def started(db: AsyncEngine, own: Settings, count: int) -> list[str]:
    clock = FakeClock(datetime.now(UTC))
    s = store(db, own, clock)
    envelopes = [order_submitted() for _ in range(count)]
    for envelope in envelopes:
        await s.handle(Incoming.from_envelope(envelope))
    return [str(e.correlation_id) for e in envelopes]


async def cli_ok(own: Settings, *args: str) -> dict:  # type: ignore[type-arg]
    result = await cli(own, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


async def test_list_cancel_and_reschedule(own: Settings, db: AsyncEngine) -> None:
    first, second, third = await started(db, own, 3)

    listed = await cli_ok(own, "timers", "list", "--future", "--limit", "1000")
    mine = [t for t in listed["timers"] if t["saga_id"] in (first, second, third)]
    assert [(t["name"], t["state"], t["workflow"]) for t in mine] == [
        ("step-timeout", "awaiting_payment", "order")
    ] * 3
    assert all(500 < t["due_in_seconds"] <= 600 for t in mine)
    assert (await cli_ok(own, "timers", "list", "--saga", second))["count"] == 1

    cancelled = await cli_ok(own, "timers", "cancel", first, "step-timeout",
                             "--reason", "handled by phone", "--by", "ann")  # fmt: skip
    assert (cancelled["action"], cancelled["due_at"]) == ("cancel", None)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    moved = await cli_ok(own, "timers", "reschedule", second, "step-timeout", "--at", past,
                         "--reason", "customer gave up", "--by", "ann")  # fmt: skip
    assert moved["due_at"] == past
    later = await cli_ok(own, "timers", "reschedule", third, "step-timeout", "--in", "2d",
                         "--reason", "bank holiday")  # fmt: skip
    assert later["due_at"] > (datetime.now(UTC) + timedelta(days=1)).isoformat()

    due = await cli_ok(own, "timers", "list", "--due", "--limit", "1000")
    assert [t["saga_id"] for t in due["timers"] if t["saga_id"] in (first, second, third)] == [
        second
    ]

    # The timer loop an hour from now: the rescheduled one fired, the cancelled one never does,
    # the one moved by two days has not yet.
    fired = await store(db, own, FakeClock(datetime.now(UTC) + timedelta(hours=1))).fire_due_timers(
        1000
    )
    assert str(second) in {str(f.result.saga_id) for f in fired}
    assert str(first) not in {str(f.result.saga_id) for f in fired}
    async with db.connect() as conn:
        states = dict(
            (await conn.execute(
                select(instances.c.id, instances.c.state).where(
                    instances.c.id.in_([first, second, third]))
            )).all()
        )  # fmt: skip
        entries = (
            await conn.execute(
                select(history).where(history.c.saga_id == first).order_by(history.c.id)
            )
        ).all()
        left = (await conn.execute(select(timers.c.saga_id).where(timers.c.saga_id == first))).all()
    assert {str(k): v for k, v in states.items()}[second] != "awaiting_payment"
    assert {str(k): v for k, v in states.items()}[first] == "awaiting_payment"
    assert left == []
    entry = entries[-1]
    assert (entry.actor, entry.outcome, entry.message_type) == (
        "operator:ann", "operator-timer-cancel", "operator:timer-cancel",
    )  # fmt: skip
    assert "handled by phone" in entry.note and (entry.from_state, entry.to_state) == (
        "awaiting_payment", "awaiting_payment",
    )  # fmt: skip


async def test_refusals_are_one_line(own: Settings, db: AsyncEngine) -> None:
    (saga,) = await started(db, own, 1)
    unknown = await cli(own, "timers", "cancel", saga, "nope", "--reason", "x")
    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == "error: saga has no timer 'nope' (its timers: step-timeout)"
    both = await cli(own, "timers", "reschedule", saga, "step-timeout", "--reason", "x",
                     "--at", "2030-01-01T00:00:00Z", "--in", "1h")  # fmt: skip
    assert both.exit_code == 2 and "exactly one of --at or --in" in both.stderr
    naive = await cli(own, "timers", "reschedule", saga, "step-timeout", "--reason", "x",
                      "--at", "2030-01-01T00:00:00")  # fmt: skip
    assert naive.exit_code == 2 and "needs a time zone" in naive.stderr
    no_reason = await cli(own, "timers", "cancel", saga, "step-timeout", "--reason", " ")
    assert no_reason.exit_code == 2 and "a reason is required" in no_reason.stderr
    await cli_ok(own, "saga", "abort", saga, "--reason", "test")
    finished = await cli(own, "timers", "cancel", saga, "step-timeout", "--reason", "x")
    assert finished.exit_code == 1
    assert finished.stderr.strip() == "error: saga is already aborted: it has no timers"
    nobody = await cli(own, "timers", "cancel", "no-such-order", "step-timeout", "--reason", "x")
    assert nobody.exit_code == 1 and "no saga with id or business key" in nobody.stderr
