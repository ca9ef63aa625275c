"""A worker that takes commands only from listed broker users, on the real broker.

The test connects as the broker's one user here (`guest`), so it plays both sides: the worker's
own user is `guest` and the only allowed sender is an orchestrator user that does not exist.
A command with no `user_id` is then a forgery (parked, nothing charged); one signed `guest`
stands for the worker's own retry copies, which must keep coming back in.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers import WORKERS, WorkerSettings, build_app
from consumers.payments import tables as pay
from consumers.testing import ReplyListener, delete_namespace, running, wait_parked
from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from contracts.topology import H_ATTEMPT, H_REASON, ParkReason
from sagaline.db import create_unpooled_engine
from sagaline.messaging.publish import envelope_message
from sagaline.service import confirm_channel, connect_amqp
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HEALTHY = WorkerSettings(fail_commands=frozenset())
FAILING = WorkerSettings(fail_commands=frozenset({"ProcessPayment"}))


@pytest.fixture(scope="module")
async def guarded(settings: Settings) -> AsyncIterator[Settings]:
    own = settings.model_copy(
        update={
            "namespace": f"{settings.namespace}-s{uuid.uuid4().hex[:6]}",
            "command_senders": frozenset({"orchestrator-that-is-not-us"}),
        }
    )
    assert own.broker_user == "guest", "these tests need the broker's guest user"
    yield own
    connection = await connect_amqp(own)
    try:
        await delete_namespace(await connection.channel(), own.topology, WORKERS)
    finally:
        await connection.close()


@pytest.fixture
async def channel(guarded: Settings) -> AsyncIterator[AbstractChannel]:
    connection = await connect_amqp(guarded)
    try:
        yield await confirm_channel(connection)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def db(guarded: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(guarded.sqlalchemy_url)
    yield engine
    await engine.dispose()


def charge() -> Envelope[o.ProcessPayment]:
    return new_envelope(
        o.ProcessPayment(
            order_id=f"order-{uuid.uuid4().hex[:12]}",
            customer_id="c-1",
            amount_cents=800,
            currency="EUR",
            card_token="tok_ok",
        ),
        correlation_id=uuid.uuid4(),
    )


async def publish(
    channel: AbstractChannel, queue: str, envelope: Envelope[o.ProcessPayment], user: str | None
) -> None:
    message = envelope_message(envelope)
    message.user_id = user
    await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)


async def charges(db: AsyncEngine, order_id: str) -> int:
    async with db.connect() as conn:
        count = await conn.scalar(select(func.count()).where(pay.ledger.c.order_id == order_id))
    return int(count or 0)


async def test_a_command_from_no_listed_sender_is_parked_and_nothing_is_charged(
    guarded: Settings, channel: AbstractChannel, db: AsyncEngine
) -> None:
    topology = guarded.topology
    forged = charge()
    async with (
        ReplyListener(channel, topology) as replies,
        running(build_app("payments", guarded, HEALTHY)),
    ):
        await publish(channel, topology.work_queue("payments"), forged, user=None)
        parked = await wait_parked(channel, topology.parking_queue("payments"), forged.message_id)

    assert parked.headers[H_REASON] == ParkReason.UNAUTHORIZED_SENDER.value
    assert "no user_id" in str(parked.headers["x-sagaline-error"])
    assert await charges(db, forged.payload.order_id) == 0
    assert replies.replies_to(forged.message_id) == []


async def test_own_retry_copies_come_back_in_and_replies_are_signed(
    guarded: Settings, channel: AbstractChannel, db: AsyncEngine
) -> None:
    """A command that fails transiently goes round the retry ladder as copies the worker
    published itself; were they not signed with its user, the second attempt would be parked
    as unauthorized-sender instead of being tried again."""
    topology = guarded.topology
    failing = charge()
    async with running(build_app("payments", guarded, FAILING)):
        await publish(channel, topology.work_queue("payments"), failing, user="guest")
        parked = await wait_parked(channel, topology.parking_queue("payments"), failing.message_id)
    assert parked.headers[H_REASON] == ParkReason.RETRIES_EXHAUSTED.value
    assert parked.headers[H_ATTEMPT] == len(guarded.retry_delays) + 1
    assert parked.user_id == "guest"

    accepted = charge()
    async with (
        ReplyListener(channel, topology) as replies,
        running(build_app("payments", guarded, HEALTHY)),
    ):
        await publish(channel, topology.work_queue("payments"), accepted, user="guest")
        (reply,) = await replies.wait(accepted.message_id)
    assert isinstance(reply.envelope.payload, o.PaymentProcessed)
    assert reply.message.user_id == "guest"
    assert await charges(db, accepted.payload.order_id) == 1


async def test_the_broker_refuses_a_user_id_that_is_not_the_senders(
    guarded: Settings, channel: AbstractChannel
) -> None:
    """Why `user_id` can be trusted: RabbitMQ closes the channel of a forged one."""
    topology = guarded.topology
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await publish(channel, topology.work_queue("payments"), charge(), user="someone-else")
