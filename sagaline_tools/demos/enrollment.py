"""The enrollment demo: courses to seed, requests to publish, and the outcomes to expect.

`build_scenario` is pure and deterministic for a run tag: more users than seats race for one
course (exactly `seats` complete, the rest fail with a reason), a course with no capacity, a
course whose access grant is refused (those enrollments are compensated: seat released, notice
recorded), and duplicate requests (same user and course, new correlation id) that must not start
a saga of their own. Each run names its courses and users after its tag, so runs never collide.

`run` talks to a running system through its public surface only - it seeds the courses with the
courses worker's helper, publishes EnrollmentRequested events, and reads saga rows until every
saga is final - and reports through callbacks, so the CLI decides how to render.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from contracts.enrollment import EnrollmentRequested
from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_DEMO_NAMESPACE = uuid.UUID("5a6a11e0-de30-4b1e-9d7c-00000000e001")
_RUN_TAG = re.compile(r"^[a-z0-9][a-z0-9\-]{0,39}$")

FINAL_STATES = frozenset({"completed", "failed", "compensation_failed", "aborted"})
NO_SAGA = "no saga"
"""The expected 'state' of a duplicate request: its correlation id never names a saga."""


class Group(StrEnum):
    RACE = "race"
    """More users than seats on one course: exactly `seats` complete, the others fail."""
    FULL = "no-capacity"
    """A course with capacity 0: fails at the capacity check, nothing held."""
    ACCESS_CLOSED = "access-refused"
    """The seat is confirmed, the access grant refused: compensated, ends failed."""
    DUPLICATE = "duplicate"
    """A second request for a racer's (user, course) under a new correlation id: a no-op."""


@dataclass(frozen=True)
class DemoCourse:
    course_id: str
    capacity: int
    title: str
    access_open: bool = True


@dataclass(frozen=True)
class DemoRequest:
    group: Group
    saga_id: uuid.UUID
    """The correlation id it is published with."""
    request: EnrollmentRequested
    expected: frozenset[str]
    """Final states it may end in ({NO_SAGA} for a duplicate)."""
    duplicate_of: uuid.UUID | None = None

    @property
    def user_id(self) -> str:
        return self.request.user_id

    @property
    def course_id(self) -> str:
        return self.request.course_id


@dataclass(frozen=True)
class EnrollmentScenario:
    run_tag: str
    courses: tuple[DemoCourse, ...]
    requests: tuple[DemoRequest, ...]
    expected_counts: Mapping[Group, Mapping[str, int]]
    """Per group, how many of its requests end in each state (a race decides who, not how many)."""
    expected_seats: Mapping[str, int]
    """Confirmed seats per course once every saga is final."""

    @property
    def sagas(self) -> tuple[DemoRequest, ...]:
        """The requests that start a saga (every one but the duplicates)."""
        return tuple(r for r in self.requests if r.duplicate_of is None)

    def check(self, states: Mapping[uuid.UUID, str], seats: Mapping[str, int]) -> list[str]:
        """What differs from the expectation (empty when the run went as predicted).

        `states`: final state by saga id (ids without a saga are absent); `seats`: confirmed
        seats by course id.
        """
        problems: list[str] = []
        counts: dict[Group, Counter[str]] = {}
        for item in self.requests:
            state = states.get(item.saga_id, NO_SAGA)
            counts.setdefault(item.group, Counter())[state] += 1
            if state not in item.expected:
                problems.append(
                    f"{item.group.value} request of {item.user_id} (saga {item.saga_id}): "
                    f"expected {' or '.join(sorted(item.expected))}, got {state}"
                )
        for group, expected in self.expected_counts.items():
            got = dict(counts.get(group, Counter()))
            if got != dict(expected):
                problems.append(f"{group.value}: expected {dict(expected)}, got {got}")
        for course_id, expected_seats in self.expected_seats.items():
            if seats.get(course_id) != expected_seats:
                problems.append(
                    f"course {course_id}: expected {expected_seats} seats taken, "
                    f"got {seats.get(course_id)}"
                )
        return problems


def build_scenario(
    run_tag: str,
    *,
    racers: int = 20,
    seats: int = 5,
    no_capacity: int = 2,
    access_refused: int = 2,
    duplicates: int = 1,
) -> EnrollmentScenario:
    """The courses, requests and expected outcomes of one demo run (no I/O)."""
    if not _RUN_TAG.match(run_tag):
        raise ValueError("run tag must be 1-40 lower-case letters, digits or '-'")
    if min(racers, seats, no_capacity, access_refused, duplicates) < 0:
        raise ValueError("counts must not be negative")
    if duplicates > racers:
        raise ValueError("each duplicate repeats a racer's request: duplicates <= racers")
    popular = DemoCourse(f"demo-{run_tag}-popular", seats, "Sagas in Practice")
    full = DemoCourse(f"demo-{run_tag}-full", 0, "Distributed Transactions (sold out)")
    closed = DemoCourse(
        f"demo-{run_tag}-closed", max(access_refused, 1), "Outbox Patterns", access_open=False
    )
    either = frozenset({"completed", "failed"})
    race = [_request(run_tag, Group.RACE, i, popular, either) for i in range(racers)]
    requests = [
        *race,
        *(_request(run_tag, Group.FULL, i, full, {"failed"}) for i in range(no_capacity)),
        *(
            _request(run_tag, Group.ACCESS_CLOSED, i, closed, {"failed"})
            for i in range(access_refused)
        ),
        *(_duplicate(run_tag, i, race[i]) for i in range(duplicates)),
    ]
    won = min(seats, racers)
    expected_counts = {
        Group.RACE: _nonzero(completed=won, failed=racers - won),
        Group.FULL: _nonzero(failed=no_capacity),
        Group.ACCESS_CLOSED: _nonzero(failed=access_refused),
        Group.DUPLICATE: _nonzero(**{NO_SAGA: duplicates}),
    }
    return EnrollmentScenario(
        run_tag=run_tag,
        courses=(popular, full, closed),
        requests=tuple(requests),
        expected_counts={g: c for g, c in expected_counts.items() if c},
        # Refused access releases its seat again: only the race's winners hold one at the end.
        expected_seats={popular.course_id: won, full.course_id: 0, closed.course_id: 0},
    )


def _request(
    run_tag: str, group: Group, index: int, course: DemoCourse, expected: Iterable[str]
) -> DemoRequest:
    user_id = f"demo-{run_tag}-{group.value}-{index + 1:03d}"
    return DemoRequest(
        group=group,
        saga_id=uuid.uuid5(_DEMO_NAMESPACE, f"{run_tag}:{group.value}:{index}"),
        request=EnrollmentRequested(
            user_id=user_id, course_id=course.course_id, email=f"{user_id}@example.com"
        ),
        expected=frozenset(expected),
    )


def _duplicate(run_tag: str, index: int, original: DemoRequest) -> DemoRequest:
    return DemoRequest(
        group=Group.DUPLICATE,
        saga_id=uuid.uuid5(_DEMO_NAMESPACE, f"{run_tag}:{Group.DUPLICATE.value}:{index}"),
        request=original.request,
        expected=frozenset({NO_SAGA}),
        duplicate_of=original.saga_id,
    )


def _nonzero(**counts: int) -> dict[str, int]:
    return {state: n for state, n in counts.items() if n}


# --- running against a live system ---------------------------------------------------------------


class DemoError(Exception):
    """The demo cannot run (system not up, schema missing); the message says what to do."""


@dataclass
class DemoProgress:
    scenario: EnrollmentScenario
    started: float = field(default_factory=time.monotonic)
    states: dict[uuid.UUID, str] = field(default_factory=dict)
    reasons: dict[uuid.UUID, str] = field(default_factory=dict)
    finished: set[uuid.UUID] = field(default_factory=set)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def done(self) -> bool:
        return all(r.saga_id in self.finished for r in self.scenario.sagas)


@dataclass(frozen=True)
class DemoResult:
    scenario: EnrollmentScenario
    states: Mapping[uuid.UUID, str]
    reasons: Mapping[uuid.UUID, str]
    seats: Mapping[str, int]
    problems: tuple[str, ...]
    elapsed: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return not self.problems and not self.timed_out

    def summary(self) -> dict[str, Any]:
        """JSON-ready: what the CLI prints with --json."""
        return {
            "ok": self.ok,
            "run_tag": self.scenario.run_tag,
            "timed_out": self.timed_out,
            "elapsed_seconds": round(self.elapsed, 3),
            "seats": dict(self.seats),
            "problems": list(self.problems),
            "requests": [
                {
                    "group": r.group.value,
                    "user_id": r.user_id,
                    "course_id": r.course_id,
                    "saga_id": str(r.saga_id),
                    "state": self.states.get(r.saga_id, NO_SAGA),
                    "reason": self.reasons.get(r.saga_id),
                }
                for r in self.scenario.requests
            ],
        }


def _ignore(_: object) -> None:
    return None


async def run(
    settings: Settings,
    scenario: EnrollmentScenario,
    *,
    wait_seconds: float = 60.0,
    poll_seconds: float = 0.5,
    on_step: Callable[[str], None] = _ignore,
    on_progress: Callable[[DemoProgress], None] = _ignore,
) -> DemoResult:
    """Seed, publish, and watch until every saga is final or `wait_seconds` have passed.

    A run that times out still returns (timed_out=True) with the states seen so far.
    """
    from sagaline.db import create_unpooled_engine

    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        await _seed(engine, scenario.courses)
        on_step(f"seeded {len(scenario.courses)} courses")
        progress = DemoProgress(scenario)
        originals = [r for r in scenario.requests if r.duplicate_of is None]
        await _publish(settings, originals)
        # Duplicates go out once their original's saga exists, so the original owns the
        # business key and the duplicate is the one recorded as a no-op.
        duplicates = [r for r in scenario.requests if r.duplicate_of is not None]
        deadline = progress.started + wait_seconds
        await _wait_for_sagas(engine, {r.duplicate_of for r in duplicates}, deadline, poll_seconds)
        await _publish(settings, duplicates)
        on_step(f"published {len(scenario.requests)} requests")
        while True:
            await _read_states(engine, progress)
            on_progress(progress)
            if progress.done or time.monotonic() >= deadline:
                break
            await asyncio.sleep(poll_seconds)
        seats = await _seats(engine, scenario.courses)
    finally:
        await engine.dispose()
    problems = scenario.check(progress.states, seats) if progress.done else []
    return DemoResult(
        scenario=scenario,
        states=dict(progress.states),
        reasons=dict(progress.reasons),
        seats=seats,
        problems=tuple(problems),
        elapsed=progress.elapsed,
        timed_out=not progress.done,
    )


async def _seed(engine: AsyncEngine, courses: Iterable[DemoCourse]) -> None:
    from consumers.courses.handlers import seed_course

    try:
        async with engine.begin() as conn:
            for course in courses:
                await seed_course(
                    conn,
                    course.course_id,
                    course.capacity,
                    title=course.title,
                    access_open=course.access_open,
                )
    except Exception as exc:
        raise DemoError(
            f"seeding courses failed ({type(exc).__name__}); is the schema migrated?"
        ) from exc


async def _publish(settings: Settings, requests: Iterable[DemoRequest]) -> None:
    import aio_pika
    from aiormq.exceptions import ChannelNotFoundEntity, DeliveryError

    from contracts.envelope import new_envelope
    from sagaline.messaging.publish import publish_envelope

    items = list(requests)
    if not items:
        return
    exchange = settings.topology.events_exchange
    connection = await aio_pika.connect(
        settings.amqp_url, timeout=10, **amqp_connect_options(settings)
    )
    try:
        probe = await connection.channel()
        try:
            await probe.declare_exchange(exchange, passive=True)
        except ChannelNotFoundEntity:
            raise DemoError(f"{exchange} does not exist; start the system first") from None
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for item in items:
            try:
                await publish_envelope(
                    channel, exchange, new_envelope(item.request, correlation_id=item.saga_id)
                )
            except DeliveryError:
                raise DemoError(
                    "EnrollmentRequested was not routed to any queue; is the orchestrator up?"
                ) from None
    finally:
        await connection.close()


async def _wait_for_sagas(
    engine: AsyncEngine, saga_ids: set[uuid.UUID | None], deadline: float, poll_seconds: float
) -> None:
    from sqlalchemy import func, select

    from orchestrator.store.tables import instances

    ids = [i for i in saga_ids if i is not None]
    if not ids:
        return
    query = select(func.count()).where(instances.c.id.in_(ids))
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            if await conn.scalar(query) == len(ids):
                return
        await asyncio.sleep(poll_seconds)


async def _read_states(engine: AsyncEngine, progress: DemoProgress) -> None:
    from sqlalchemy import select

    from orchestrator.store.tables import instances

    ids = [r.saga_id for r in progress.scenario.requests]
    query = select(
        instances.c.id,
        instances.c.state,
        instances.c.finished_at,
        instances.c.runtime["reason"].astext,
    ).where(instances.c.id.in_(ids))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    progress.states = {row[0]: row[1] for row in rows}
    progress.reasons = {row[0]: row[3] for row in rows if row[3] is not None}
    progress.finished = {row[0] for row in rows if row[2] is not None}


async def _seats(engine: AsyncEngine, courses: Iterable[DemoCourse]) -> dict[str, int]:
    from consumers.courses.handlers import course_seats

    found: dict[str, int] = {}
    async with engine.connect() as conn:
        for course in courses:
            summary = await course_seats(conn, course.course_id)
            if summary is not None:
                found[course.course_id] = summary.confirmed
    return found
