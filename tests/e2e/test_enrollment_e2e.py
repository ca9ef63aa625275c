"""Enrollments through real processes: a race for seats, a duplicate request, a refused grant.

Every test names its courses and users after a fresh tag and polls the database under a deadline
(no fixed sleeps). It checks outcomes through the tables each service owns: saga rows and history
(orchestrator), seats and grants (courses), recorded e-mails (notifications).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aio_pika
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.enrollment import EnrollmentRequested
from contracts.envelope import Envelope, new_envelope
from sagaline.db import create_engine
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings
from sagaline_tools.cli.demo_tables import enrollment_view
from sagaline_tools.demos.enrollment import build_scenario
from sagaline_tools.demos.enrollment import run as run_demo
from tests.e2e.conftest import System
from tests.unit.test_demo_tables import row_of
from tests.unit.test_demo_tables import text as as_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

DEADLINE_S = 120.0


def tag() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, pool_size=2)
    yield engine
    await engine.dispose()


async def seed(db: AsyncEngine, course_id: str, capacity: int, *, access_open: bool = True) -> None:
    from consumers.courses.handlers import seed_course

    async with db.begin() as conn:
        await seed_course(conn, course_id, capacity, title="Sagas 101", access_open=access_open)


def requested(user_id: str, course_id: str) -> Envelope[EnrollmentRequested]:
    event = EnrollmentRequested(
        user_id=user_id, course_id=course_id, email=f"{user_id}@example.com"
    )
    return new_envelope(event, correlation_id=uuid.uuid4())


async def publish(settings: Settings, envelopes: Iterable[Envelope[Any]]) -> None:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for envelope in envelopes:
            await publish_envelope(channel, settings.topology.events_exchange, envelope)
    finally:
        await connection.close()


async def rows(db: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def wait_until_final(db: AsyncEngine, saga_ids: set[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """Each saga's row (state, reason) once every one of them is finished."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            found = await rows(
                db,
                "SELECT id, state, runtime->>'reason' AS reason, finished_at IS NOT NULL AS done"
                " FROM saga.instances WHERE id = ANY(:ids)",
                ids=list(saga_ids),
            )
            if len(found) == len(saga_ids) and all(r.done for r in found):
                return {r.id: r for r in found}
            await asyncio.sleep(0.25)


async def wait_until_exists(db: AsyncEngine, saga_id: uuid.UUID) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not await rows(db, "SELECT 1 FROM saga.instances WHERE id = :id", id=saga_id):
            await asyncio.sleep(0.1)


async def wait_outbox_drained(db: AsyncEngine, saga_ids: set[uuid.UUID]) -> list[Any]:
    """The sagas' outbox rows once every one is published."""
    async with asyncio.timeout(30):
        while True:
            found = await rows(
                db,
                "SELECT saga_id, message_type, published_at FROM saga.outbox"
                " WHERE saga_id = ANY(:ids)",
                ids=list(saga_ids),
            )
            if all(r.published_at is not None for r in found):
                return found
            await asyncio.sleep(0.2)


async def course_state(
    db: AsyncEngine, course_id: str
) -> tuple[int, dict[str, str], dict[str, str]]:
    """(seats_taken, seat status by user, access status by user) of one course."""
    (taken,) = await rows(
        db, "SELECT seats_taken FROM courses.courses WHERE course_id = :c", c=course_id
    )
    seats = await rows(
        db, "SELECT user_id, status FROM courses.seats WHERE course_id = :c", c=course_id
    )
    grants = await rows(
        db, "SELECT user_id, status FROM courses.access_grants WHERE course_id = :c", c=course_id
    )
    return taken[0], {r.user_id: r.status for r in seats}, {r.user_id: r.status for r in grants}


async def emails(db: AsyncEngine, saga_ids: set[uuid.UUID]) -> list[Any]:
    return await rows(
        db,
        "SELECT saga_id, template, recipient FROM notifications.emails WHERE saga_id = ANY(:ids)",
        ids=list(saga_ids),
    )


def assert_alive(system: System) -> None:
    for process in system.processes:
        assert process.popen is not None and process.popen.poll() is None, process.log_tail()


async def test_twenty_users_race_for_five_seats_and_a_duplicate_takes_none(
    system: System, settings: Settings, db: AsyncEngine
) -> None:
    run = tag()
    course_id = f"e2e-{run}-popular"
    await seed(db, course_id, 5)
    requests = [requested(f"e2e-{run}-user-{i:02d}", course_id) for i in range(20)]
    sagas = {r.correlation_id: r for r in requests}

    await publish(settings, requests)
    # The same (user, course) again: a new message id and a new correlation id, once the first
    # request's saga exists (it owns the business key; the second is the recorded no-op).
    first = requests[0]
    await wait_until_exists(db, first.correlation_id)
    duplicate = new_envelope(first.payload, correlation_id=uuid.uuid4())
    await publish(settings, [duplicate])

    final = await wait_until_final(db, set(sagas))

    outcomes = Counter(r.state for r in final.values())
    assert outcomes == {"completed": 5, "failed": 15}, outcomes
    for saga in final.values():
        if saga.state == "failed":
            assert saga.reason.startswith(("no capacity:", "seat confirmation failed:")), saga
    winners = {sagas[i].payload.user_id for i, r in final.items() if r.state == "completed"}
    taken, seats, grants = await course_state(db, course_id)
    assert taken == 5
    assert seats == dict.fromkeys(winners, "confirmed")
    assert grants == dict.fromkeys(winners, "granted")
    recorded = await emails(db, set(sagas))
    completed = {i for i, r in final.items() if r.state == "completed"}
    assert sorted((r.saga_id, r.template) for r in recorded) == sorted(
        (i, "welcome") for i in completed
    )

    # The duplicate started nothing: no saga under its correlation id, one saga for the pair,
    # and the owner's history records it as a duplicate start.
    assert not await rows(
        db, "SELECT 1 FROM saga.instances WHERE id = :id", id=duplicate.correlation_id
    )
    key = f"{first.payload.user_id}/{course_id}"
    owners = await rows(
        db,
        "SELECT id FROM saga.instances WHERE workflow = 'enrollment' AND business_key = :k",
        k=key,
    )
    assert [r.id for r in owners] == [first.correlation_id]
    async with asyncio.timeout(DEADLINE_S):
        while not (
            noted := await rows(
                db,
                "SELECT saga_id, outcome FROM saga.history WHERE message_id = :m",
                m=duplicate.message_id,
            )
        ):
            await asyncio.sleep(0.1)
    assert [(r.saga_id, r.outcome) for r in noted] == [(first.correlation_id, "duplicate-start")]

    published = Counter(r.message_type for r in await wait_outbox_drained(db, set(sagas)))
    assert published["EnrollmentCompleted"] == 5
    assert published["EnrollmentFailed"] == 15
    assert published["ConfirmEnrollment"] <= 20
    assert_alive(system)


async def test_refused_access_releases_the_seat_and_records_a_notice(
    system: System, settings: Settings, db: AsyncEngine
) -> None:
    run = tag()
    course_id = f"e2e-{run}-closed"
    await seed(db, course_id, 3, access_open=False)
    requests = [requested(f"e2e-{run}-user-{i}", course_id) for i in range(2)]
    saga_ids = {r.correlation_id for r in requests}

    await publish(settings, requests)
    final = await wait_until_final(db, saga_ids)

    for saga in final.values():
        assert (saga.state, saga.reason) == (
            "failed",
            "access grant failed: course access is closed",
        )
    taken, seats, grants = await course_state(db, course_id)
    assert (taken, grants) == (0, {})
    assert seats == {r.payload.user_id: "released" for r in requests}
    recorded = await emails(db, saga_ids)
    assert sorted((r.saga_id, r.template, r.recipient) for r in recorded) == sorted(
        (r.correlation_id, template, r.payload.email)
        for r in requests
        for template in ("enrollment-cancelled", "welcome")
    )
    # The compensation ran newest first: the seat was released before the user was told.
    for saga_id in saga_ids:
        history = await rows(
            db,
            "SELECT note FROM saga.history WHERE saga_id = :s AND note LIKE 'compensated %'"
            " ORDER BY id",
            s=saga_id,
        )
        assert [r.note for r in history] == [
            "compensated ReleaseSeat",
            "compensated SendEnrollmentNotice",
        ]
    published = Counter(r.message_type for r in await wait_outbox_drained(db, saga_ids))
    assert (published["EnrollmentFailed"], published["EnrollmentCompleted"]) == (2, 0)
    assert_alive(system)


async def test_the_enrollment_demo_runs_as_predicted(system: System, settings: Settings) -> None:
    scenario = build_scenario(tag(), racers=8, seats=3)
    steps: list[str] = []

    result = await run_demo(settings, scenario, wait_seconds=DEADLINE_S, on_step=steps.append)

    assert result.ok, result.problems or "timed out"
    assert steps == ["seeded 3 courses", f"published {len(scenario.requests)} requests"]
    assert Counter(result.states.values()) == {"completed": 3, "failed": 5 + 2 + 2}
    # What `sagaline demo enrollment` prints for this real run.
    shown = as_text(enrollment_view(result))
    assert row_of(shown, "race")[1:4] == ["8", "completed 3, failed 5", "completed 3, failed 5"]
    assert "✓ every saga ended as predicted" in shown
    assert_alive(system)
