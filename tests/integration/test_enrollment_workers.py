"""The enrollment workers on a real RabbitMQ and PostgreSQL: atomic seats, fences, e-mails once.

Both workers run in-process for the whole module, in a broker namespace of their own and with
no retry budget: a command whose handler raises is parked at once and never answered. Contention
must never need a retry, so a confirmation that lost a race to an error (say, the seat CHECK
firing because the course row was not locked) fails these tests instead of hiding behind a retry.
Every test uses fresh course, user and saga ids, so tests share the database without interfering.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers import WorkerSettings, build_app
from consumers.courses import rules as course_rules
from consumers.courses import tables as crs
from consumers.courses.handlers import CourseSeats, course_seats, seed_course
from consumers.notifications import rules as note_rules
from consumers.notifications import tables as nts
from consumers.testing import ReplyListener, delete_namespace, running, send_command
from contracts import enrollment as e
from contracts.base import Command
from contracts.envelope import Envelope, new_envelope
from sagaline.db import create_unpooled_engine
from sagaline.service import confirm_channel, connect_amqp
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WORKERS = ("courses", "notifications")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
async def esettings(settings: Settings) -> AsyncIterator[Settings]:
    """The run's settings with a private broker namespace and no retries (see the docstring)."""
    own = settings.model_copy(
        update={"namespace": f"{settings.namespace}-e{uuid.uuid4().hex[:6]}", "retry_delays": ()}
    )
    yield own
    connection = await connect_amqp(own)
    try:
        await delete_namespace(await connection.channel(), own.topology, WORKERS)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def workers(esettings: Settings) -> AsyncIterator[None]:
    config = WorkerSettings(fail_commands=frozenset())
    async with (
        running(build_app("courses", esettings, config)),
        running(build_app("notifications", esettings, config)),
    ):
        yield


@pytest.fixture(scope="module")
async def db(esettings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(esettings.sqlalchemy_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def connection(esettings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect_amqp(esettings)
    yield connection
    await connection.close()


@pytest.fixture
async def channel(connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    channel = await confirm_channel(connection)
    yield channel
    await channel.close()


@pytest.fixture
async def replies(
    workers: None, channel: AbstractChannel, esettings: Settings
) -> AsyncIterator[ReplyListener]:
    async with ReplyListener(channel, esettings.topology) as listener:
        yield listener


class Client:
    """Send a command, get its reply."""

    def __init__(self, channel: AbstractChannel, settings: Settings, replies: ReplyListener):
        self.channel = channel
        self.settings = settings
        self.replies = replies

    async def send(self, envelope: Envelope[Any]) -> None:
        await send_command(self.channel, self.settings.topology, envelope)

    async def call(self, command: Command, saga_id: uuid.UUID | None = None) -> Any:
        envelope = new_envelope(command, correlation_id=saga_id or uuid.uuid4())
        await self.send(envelope)
        (reply,) = await self.replies.wait(envelope.message_id)
        return reply.envelope.payload

    async def call_all(self, envelopes: list[Envelope[Any]], within: float = 30) -> list[Any]:
        """Send concurrently; every one must be answered (none parked) within the deadline."""
        await asyncio.gather(*(self.send(env) for env in envelopes))
        try:
            answered = await asyncio.gather(
                *(self.replies.wait(env.message_id, within=within) for env in envelopes)
            )
        except TimeoutError:
            missing = sum(1 for env in envelopes if not self.replies.replies_to(env.message_id))
            pytest.fail(f"{missing} of {len(envelopes)} commands unanswered: a handler raised")
        return [reply.envelope.payload for (reply,) in answered]


@pytest.fixture
def client(channel: AbstractChannel, esettings: Settings, replies: ReplyListener) -> Client:
    return Client(channel, esettings, replies)


async def new_course(db: AsyncEngine, capacity: int, *, access_open: bool = True) -> str:
    course_id = uid("course")
    async with db.begin() as conn:
        await seed_course(conn, course_id, capacity, title="Sagas 101", access_open=access_open)
    return course_id


async def seats_of(db: AsyncEngine, course_id: str) -> CourseSeats:
    async with db.connect() as conn:
        found = await course_seats(conn, course_id)
    assert found is not None
    return found


async def seat_rows(db: AsyncEngine, course_id: str) -> dict[str, str]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(crs.seats.c.user_id, crs.seats.c.status).where(
                crs.seats.c.course_id == course_id
            )
        )
        return {user: status for user, status in rows}


# --- courses: capacity and seats ----------------------------------------------------------------


async def test_capacity_check_is_an_answer_not_a_hold(client: Client, db: AsyncEngine) -> None:
    course_id = await new_course(db, 2)
    user = uid("user")

    checked = await client.call(e.CheckCourseCapacity(course_id=course_id, user_id=user))
    assert checked == e.CourseCapacityChecked(
        course_id=course_id, user_id=user, has_capacity=True, seats_left=2, course_title="Sagas 101"
    )
    assert await seats_of(db, course_id) == CourseSeats(2, 0, 0, 0)

    full = await new_course(db, 0)
    assert await client.call(e.CheckCourseCapacity(course_id=full, user_id=user)) == (
        e.CourseCapacityChecked(
            course_id=full,
            user_id=user,
            has_capacity=False,
            seats_left=0,
            course_title="Sagas 101",
            reason=course_rules.REASON_FULL,
        )
    )
    ghost = uid("ghost")
    unknown = await client.call(e.CheckCourseCapacity(course_id=ghost, user_id=user))
    assert (unknown.has_capacity, unknown.reason) == (False, course_rules.REASON_UNKNOWN_COURSE)


async def test_concurrent_confirmations_never_oversell(client: Client, db: AsyncEngine) -> None:
    course_id = await new_course(db, 5)
    users = [uid("user") for _ in range(20)]
    # All 20 passed the (advisory) capacity check; the confirmation must decide atomically.
    confirms = [
        new_envelope(
            e.ConfirmEnrollment(course_id=course_id, user_id=u), correlation_id=uuid.uuid4()
        )
        for u in users
    ]

    answers = await client.call_all(confirms)

    kinds = Counter(type(a).__name__ for a in answers)
    assert kinds == {"EnrollmentConfirmed": 5, "EnrollmentConfirmationFailed": 15}, kinds
    assert {a.reason for a in answers if isinstance(a, e.EnrollmentConfirmationFailed)} == {
        course_rules.REASON_NO_SEATS
    }
    winners = {a.user_id for a in answers if isinstance(a, e.EnrollmentConfirmed)}
    assert await seat_rows(db, course_id) == dict.fromkeys(winners, "confirmed")
    assert await seats_of(db, course_id) == CourseSeats(5, 5, 5, 0)


async def test_redelivered_confirmation_returns_the_stored_reply_and_takes_one_seat(
    client: Client, db: AsyncEngine
) -> None:
    course_id = await new_course(db, 3)
    user = uid("user")
    command = new_envelope(
        e.ConfirmEnrollment(course_id=course_id, user_id=user), correlation_id=uuid.uuid4()
    )
    await client.send(command)
    await client.send(command)
    first, second = await client.replies.wait(command.message_id, count=2)

    assert first.message.body == second.message.body
    assert first.envelope.payload == e.EnrollmentConfirmed(course_id=course_id, user_id=user)
    # The same seat asked for under another message id (a new saga attempt): reported, not taken.
    again = await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=user))
    assert again == first.envelope.payload
    assert await seats_of(db, course_id) == CourseSeats(3, 1, 1, 0)
    async with db.connect() as conn:
        rows = await conn.scalar(
            select(func.count()).where(crs.inbox.c.message_id == command.message_id)
        )
    assert rows == 1


async def test_release_frees_the_seat_for_someone_else(client: Client, db: AsyncEngine) -> None:
    course_id = await new_course(db, 1)
    first, second, third = uid("user"), uid("user"), uid("user")

    assert isinstance(
        await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=first)),
        e.EnrollmentConfirmed,
    )
    refused = await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=second))
    assert refused == e.EnrollmentConfirmationFailed(
        course_id=course_id, user_id=second, reason=course_rules.REASON_NO_SEATS
    )
    release = e.ReleaseSeat(course_id=course_id, user_id=first)
    assert await client.call(release) == e.SeatReleased(course_id=course_id, user_id=first)
    assert await client.call(release) == e.SeatReleased(course_id=course_id, user_id=first)
    assert await seats_of(db, course_id) == CourseSeats(1, 0, 0, 0)
    assert isinstance(
        await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=third)),
        e.EnrollmentConfirmed,
    )
    assert await seat_rows(db, course_id) == {first: "released", third: "confirmed"}


async def test_release_before_confirmation_fences_a_late_confirmation(
    client: Client, db: AsyncEngine
) -> None:
    course_id = await new_course(db, 2)
    user = uid("user")

    assert await client.call(e.ReleaseSeat(course_id=course_id, user_id=user)) == e.SeatReleased(
        course_id=course_id, user_id=user
    )
    late = await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=user))
    assert late == e.EnrollmentConfirmationFailed(
        course_id=course_id, user_id=user, reason=course_rules.REASON_RELEASED
    )
    assert await seats_of(db, course_id) == CourseSeats(2, 0, 0, 0)
    assert await seat_rows(db, course_id) == {user: "released"}


async def test_racing_confirmations_and_releases_never_keep_a_seat(
    client: Client, db: AsyncEngine
) -> None:
    course_id = await new_course(db, 20)
    users = [uid("race") for _ in range(20)]
    commands: list[Envelope[Any]] = []
    for user in users:
        saga = uuid.uuid4()
        confirm = new_envelope(
            e.ConfirmEnrollment(course_id=course_id, user_id=user), correlation_id=saga
        )
        release = new_envelope(
            e.ReleaseSeat(course_id=course_id, user_id=user), correlation_id=saga
        )
        commands += [confirm, release] if random.random() < 0.5 else [release, confirm]

    await client.call_all(commands)

    # Confirmed then released, or the void marker and no seat: never a seat kept.
    assert await seat_rows(db, course_id) == dict.fromkeys(users, "released")
    assert await seats_of(db, course_id) == CourseSeats(20, 0, 0, 0)


async def test_seed_refuses_a_capacity_below_the_seats_taken(
    client: Client, db: AsyncEngine
) -> None:
    course_id = await new_course(db, 2)
    for _ in range(2):
        await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=uid("user")))
    with pytest.raises(Exception, match="ck_courses_seats_within_capacity"):
        async with db.begin() as conn:
            await seed_course(conn, course_id, 1)
    assert await seats_of(db, course_id) == CourseSeats(2, 2, 2, 0)


# --- courses: access ----------------------------------------------------------------------------


async def test_access_needs_a_confirmed_seat_and_is_revocable(
    client: Client, db: AsyncEngine
) -> None:
    course_id = await new_course(db, 5)
    user = uid("user")
    grant = e.GrantCourseAccess(course_id=course_id, user_id=user)

    assert await client.call(grant) == e.CourseAccessDenied(
        course_id=course_id, user_id=user, reason=course_rules.REASON_NO_SEAT
    )
    await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=user))
    granted = e.CourseAccessGranted(course_id=course_id, user_id=user)
    assert await client.call(grant) == granted
    assert await client.call(grant) == granted  # another message id: reported, not re-granted
    assert (await seats_of(db, course_id)).granted == 1

    revoke = e.RevokeCourseAccess(course_id=course_id, user_id=user)
    revoked = e.CourseAccessRevoked(course_id=course_id, user_id=user)
    assert await client.call(revoke) == revoked
    assert await client.call(revoke) == revoked
    assert (await seats_of(db, course_id)).granted == 0
    assert await client.call(grant) == e.CourseAccessDenied(
        course_id=course_id, user_id=user, reason=course_rules.REASON_REVOKED
    )


async def test_closed_course_refuses_access(client: Client, db: AsyncEngine) -> None:
    course_id = await new_course(db, 5, access_open=False)
    user = uid("user")
    await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=user))

    denied = await client.call(e.GrantCourseAccess(course_id=course_id, user_id=user))

    assert denied == e.CourseAccessDenied(
        course_id=course_id, user_id=user, reason=course_rules.REASON_ACCESS_CLOSED
    )
    assert await seats_of(db, course_id) == CourseSeats(5, 1, 1, 0)


async def test_revoke_before_grant_fences_a_late_grant(client: Client, db: AsyncEngine) -> None:
    course_id = await new_course(db, 5)
    user = uid("user")
    await client.call(e.ConfirmEnrollment(course_id=course_id, user_id=user))

    await client.call(e.RevokeCourseAccess(course_id=course_id, user_id=user))
    late = await client.call(e.GrantCourseAccess(course_id=course_id, user_id=user))

    assert late == e.CourseAccessDenied(
        course_id=course_id, user_id=user, reason=course_rules.REASON_REVOKED
    )
    assert (await seats_of(db, course_id)).granted == 0


# --- notifications ------------------------------------------------------------------------------


def welcome(user: str, email: str = "ada@example.com") -> e.SendWelcomeEmail:
    return e.SendWelcomeEmail(
        course_id="course-1", user_id=user, email=email, course_title="Sagas 101"
    )


def notice(user: str) -> e.SendEnrollmentNotice:
    return e.SendEnrollmentNotice(
        course_id="course-1", user_id=user, email="ada@example.com", course_title="Sagas 101"
    )


async def emails_of(db: AsyncEngine, saga_id: uuid.UUID) -> list[tuple[str, str, str, str]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(
                nts.emails.c.template,
                nts.emails.c.recipient,
                nts.emails.c.subject,
                nts.emails.c.email_id,
            )
            .where(nts.emails.c.saga_id == saga_id)
            .order_by(nts.emails.c.created_at)
        )
        return [tuple(row) for row in rows]


async def test_welcome_email_is_recorded_once(client: Client, db: AsyncEngine) -> None:
    saga = uuid.uuid4()
    user = uid("user")
    email_id = note_rules.email_id_for(saga, note_rules.Template.WELCOME)
    command = new_envelope(welcome(user), correlation_id=saga)
    await client.send(command)
    await client.send(command)
    first, second = await client.replies.wait(command.message_id, count=2)

    assert first.message.body == second.message.body
    sent = e.WelcomeEmailSent(course_id="course-1", user_id=user, email_id=email_id)
    assert first.envelope.payload == sent
    # Re-sent under another message id for the same saga: the recorded e-mail is reported.
    assert await client.call(welcome(user), saga) == sent
    assert await emails_of(db, saga) == [
        ("welcome", "ada@example.com", "Welcome to Sagas 101", email_id)
    ]


async def test_concurrent_welcomes_for_one_saga_record_one_email(
    client: Client, db: AsyncEngine
) -> None:
    saga = uuid.uuid4()
    user = uid("user")
    commands = [new_envelope(welcome(user), correlation_id=saga) for _ in range(10)]

    answers = await client.call_all(commands)

    assert {a.email_id for a in answers} == {
        note_rules.email_id_for(saga, note_rules.Template.WELCOME)
    }
    assert len(await emails_of(db, saga)) == 1


async def test_undeliverable_welcome_fails_and_records_nothing(
    client: Client, db: AsyncEngine
) -> None:
    saga = uuid.uuid4()
    user = uid("user")
    failed = await client.call(welcome(user, "ada@example.invalid"), saga)
    assert failed == e.WelcomeEmailFailed(
        course_id="course-1", user_id=user, reason=note_rules.REASON_UNDELIVERABLE
    )
    assert await emails_of(db, saga) == []


async def test_notice_is_recorded_once_and_fences_a_late_welcome(
    client: Client, db: AsyncEngine
) -> None:
    saga = uuid.uuid4()
    user = uid("user")
    notice_id = note_rules.email_id_for(saga, note_rules.Template.ENROLLMENT_CANCELLED)
    noticed = e.EnrollmentNoticeSent(course_id="course-1", user_id=user, email_id=notice_id)

    assert await client.call(notice(user), saga) == noticed
    assert await client.call(notice(user), saga) == noticed
    late = await client.call(welcome(user), saga)

    assert late == e.WelcomeEmailFailed(
        course_id="course-1", user_id=user, reason=note_rules.REASON_CANCELLED
    )
    assert await emails_of(db, saga) == [
        (
            "enrollment-cancelled",
            "ada@example.com",
            "Your enrollment in Sagas 101 was cancelled",
            notice_id,
        )
    ]
