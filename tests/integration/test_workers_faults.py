"""Workers under failure: misrouted commands park at once; transient failures are retried with
the configured delays, then parked, and a replay after the fault is gone succeeds.

Each test starts its own payments worker (some with the fault switch on) in a broker namespace
private to this module.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers import WORKERS, WorkerSettings, build_app
from consumers.payments import tables as pay
from consumers.testing import (
    ReplyListener,
    delete_namespace,
    running,
    send_command,
    send_to_queue,
    wait_parked,
)
from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from contracts.topology import (
    H_ATTEMPT,
    H_CAUSATION_ID,
    H_ERROR,
    H_ORIGINAL_QUEUE,
    H_REASON,
    ORCHESTRATOR,
    ParkReason,
)
from sagaline.db import create_unpooled_engine
from sagaline.messaging.parsing import parse_body
from sagaline.service import confirm_channel, connect_amqp
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HEALTHY = WorkerSettings(fail_commands=frozenset())
FAILING = WorkerSettings(fail_commands=frozenset({"ProcessPayment"}))


@pytest.fixture(scope="module")
async def fsettings(settings: Settings) -> AsyncIterator[Settings]:
    own = settings.model_copy(update={"namespace": f"{settings.namespace}-f{uuid.uuid4().hex[:6]}"})
    yield own
    connection = await connect_amqp(own)
    try:
        await delete_namespace(await connection.channel(), own.topology, WORKERS)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def connection(fsettings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect_amqp(fsettings)
    yield connection
    await connection.close()


@pytest.fixture
async def channel(connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    channel = await confirm_channel(connection)
    yield channel
    await channel.close()


@pytest.fixture
async def replies(channel: AbstractChannel, fsettings: Settings) -> AsyncIterator[ReplyListener]:
    async with ReplyListener(channel, fsettings.topology) as listener:
        yield listener


@pytest.fixture(scope="module")
async def db(fsettings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(fsettings.sqlalchemy_url)
    yield engine
    await engine.dispose()


class Attempts(logging.Handler):
    """Records when the fault switch fired, per message id (one record per delivery attempt)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, message_id: uuid.UUID) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "message_id", None) == str(message_id)]


@pytest.fixture
def attempts() -> Iterator[Attempts]:
    handler = Attempts()
    logger = logging.getLogger("consumers.faults")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def charge(order_id: str) -> Envelope[o.ProcessPayment]:
    return new_envelope(
        o.ProcessPayment(
            order_id=order_id,
            customer_id="c-1",
            amount_cents=800,
            currency="EUR",
            card_token="tok_ok",
        ),
        correlation_id=uuid.uuid4(),
    )


async def inbox_rows(db: AsyncEngine, message_id: uuid.UUID) -> int:
    async with db.connect() as conn:
        count = await conn.scalar(select(func.count()).where(pay.inbox.c.message_id == message_id))
    return int(count or 0)


async def test_unhandled_command_type_is_parked(
    fsettings: Settings, channel: AbstractChannel, replies: ReplyListener, db: AsyncEngine
) -> None:
    topology = fsettings.topology
    misrouted = new_envelope(
        o.ReserveInventory(order_id="o-x", lines=(o.OrderLine(sku="s", quantity=1),)),
        correlation_id=uuid.uuid4(),
    )
    async with running(build_app("payments", fsettings, HEALTHY)):
        await send_to_queue(channel, topology.work_queue("payments"), misrouted)
        parked = await wait_parked(
            channel, topology.parking_queue("payments"), misrouted.message_id
        )

    assert parked.headers[H_REASON] == ParkReason.UNEXPECTED_TYPE.value
    assert parked.headers[H_ORIGINAL_QUEUE] == topology.work_queue("payments")
    assert parked.headers[H_ATTEMPT] == 1
    assert "ReserveInventory" in str(parked.headers[H_ERROR])
    assert parked.body == misrouted.to_json()
    assert replies.replies_to(misrouted.message_id) == []
    assert await inbox_rows(db, misrouted.message_id) == 0


async def test_transient_failure_is_retried_then_parked_then_replayed(
    fsettings: Settings,
    channel: AbstractChannel,
    replies: ReplyListener,
    db: AsyncEngine,
    attempts: Attempts,
) -> None:
    topology = fsettings.topology
    command = charge(f"order-{uuid.uuid4().hex[:12]}")
    async with running(build_app("payments", fsettings, FAILING)):
        await send_command(channel, topology, command)
        parked = await wait_parked(channel, topology.parking_queue("payments"), command.message_id)

    # One attempt per delivery, in order, each retry no earlier than its configured delay.
    records = attempts.of(command.message_id)
    assert [getattr(r, "attempt", None) for r in records] == [1, 2, 3]
    gaps = [later.created - earlier.created for earlier, later in itertools.pairwise(records)]
    for gap, delay in zip(gaps, fsettings.retry_delays, strict=True):
        assert gap >= delay, (gaps, fsettings.retry_delays)

    assert parked.headers[H_REASON] == ParkReason.RETRIES_EXHAUSTED.value
    assert parked.headers[H_ORIGINAL_QUEUE] == topology.work_queue("payments")
    assert parked.headers[H_ATTEMPT] == 3
    assert str(parked.headers[H_ERROR]).startswith(
        "InjectedFault: injected failure for ProcessPayment"
    )
    assert parked.message_id == str(command.message_id)
    assert replies.replies_to(command.message_id) == []
    assert await inbox_rows(db, command.message_id) == 0  # every attempt rolled back

    # The fault is gone: an operator replays the parked body; the charge happens now, once.
    async with running(build_app("payments", fsettings, HEALTHY)):
        replayed = parse_body(parked.body, parked.content_type, fsettings.max_body_bytes)
        await send_to_queue(channel, topology.work_queue("payments"), replayed)
        (reply,) = await replies.wait(command.message_id)
    assert isinstance(reply.envelope.payload, o.PaymentProcessed)
    assert reply.message.headers[H_CAUSATION_ID] == str(command.message_id)
    assert await inbox_rows(db, command.message_id) == 1


async def test_fault_switch_still_returns_stored_replies(
    fsettings: Settings, channel: AbstractChannel, replies: ReplyListener, attempts: Attempts
) -> None:
    topology = fsettings.topology
    command = charge(f"order-{uuid.uuid4().hex[:12]}")
    async with running(build_app("payments", fsettings, HEALTHY)):
        await send_command(channel, topology, command)
        (first,) = await replies.wait(command.message_id)
    async with running(build_app("payments", fsettings, FAILING)):
        await send_command(channel, topology, command)  # a redelivery of a handled command
        _, second = await replies.wait(command.message_id, count=2)

    assert second.message.body == first.message.body
    assert attempts.of(command.message_id) == []


async def test_fault_switch_leaves_other_commands_alone(
    fsettings: Settings, channel: AbstractChannel, replies: ReplyListener
) -> None:
    refund = new_envelope(o.RefundPayment(order_id="o-untouched"), correlation_id=uuid.uuid4())
    async with running(build_app("payments", fsettings, FAILING)):
        await send_command(channel, fsettings.topology, refund)
        (reply,) = await replies.wait(refund.message_id)
    assert isinstance(reply.envelope.payload, o.PaymentRefunded)


async def test_worker_stops_cleanly_with_nothing_in_flight(fsettings: Settings) -> None:
    async with asyncio.timeout(20), running(build_app("payments", fsettings, HEALTHY)):
        pass


async def test_unroutable_reply_is_kept_and_sent_on_replay(
    fsettings: Settings, channel: AbstractChannel, db: AsyncEngine
) -> None:
    """Nothing is bound for the reply (an operator removed the binding): the publish is
    returned, so the command is retried and parked; the effect and its reply are already
    stored, and a replay once someone listens publishes that stored reply without charging
    again."""
    topology = fsettings.topology
    command = charge(f"order-{uuid.uuid4().hex[:12]}")
    async with running(build_app("payments", fsettings, HEALTHY)):
        # Workers declare the orchestrator's queue with every reply bound (see the next
        # test); remove that one binding to make the reply unroutable.
        orchestrator = await channel.get_queue(topology.work_queue(ORCHESTRATOR))
        await orchestrator.unbind(topology.events_exchange, "PaymentProcessed")
        await send_command(channel, topology, command)
        parked = await wait_parked(channel, topology.parking_queue("payments"), command.message_id)
        assert parked.headers[H_REASON] == ParkReason.RETRIES_EXHAUSTED.value
        assert str(parked.headers[H_ERROR]) == (
            f"ReplyNotDelivered: reply PaymentProcessed to {topology.events_exchange}"
            " was returned as unroutable"
        )
        assert await inbox_rows(db, command.message_id) == 1

        async with ReplyListener(channel, topology) as replies:
            replayed = parse_body(parked.body, parked.content_type, fsettings.max_body_bytes)
            await send_to_queue(channel, topology.work_queue("payments"), replayed)
            (reply,) = await replies.wait(command.message_id)
        await orchestrator.bind(topology.events_exchange, "PaymentProcessed")
    assert isinstance(reply.envelope.payload, o.PaymentProcessed)
    async with db.connect() as conn:
        charges = await conn.scalar(
            select(func.count()).where(pay.ledger.c.order_id == command.payload.order_id)
        )
    assert charges == 1


async def test_a_worker_started_before_any_orchestrator_has_its_replies_queued(
    fsettings: Settings, channel: AbstractChannel
) -> None:
    """Workers declare the orchestrator's queue: replies wait there instead of bouncing."""
    topology = fsettings.topology
    command = charge(f"order-{uuid.uuid4().hex[:12]}")
    async with running(build_app("payments", fsettings, HEALTHY)):
        await send_command(channel, topology, command)
        queue = await channel.get_queue(topology.work_queue(ORCHESTRATOR))
        found = None
        async with asyncio.timeout(10):
            while found is None:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                if message.headers.get(H_CAUSATION_ID) == str(command.message_id):
                    found = message
    assert found.type == "PaymentProcessed"


def refund(order_id: str) -> Envelope[o.RefundPayment]:
    return new_envelope(o.RefundPayment(order_id=order_id), correlation_id=uuid.uuid4())


async def test_a_failing_command_does_not_hold_back_or_repeat_the_rest_of_its_batch(
    fsettings: Settings, channel: AbstractChannel, replies: ReplyListener, db: AsyncEngine
) -> None:
    batch_failures = Attempts()  # records the batch consumer's warnings
    logging.getLogger("sagaline.batching").addHandler(batch_failures)
    try:
        await _failing_command_in_a_batch(fsettings, channel, replies, db, batch_failures)
    finally:
        logging.getLogger("sagaline.batching").removeHandler(batch_failures)


async def _failing_command_in_a_batch(
    fsettings: Settings,
    channel: AbstractChannel,
    replies: ReplyListener,
    db: AsyncEngine,
    batch_failures: Attempts,
) -> None:
    """Commands waiting together are taken as one batch; one of them fails (fault switch on
    ProcessPayment). The batch is rolled back and handled one by one: each refund is answered
    once and written once, and the failing charge alone goes through retries to parking."""
    topology = fsettings.topology
    async with running(build_app("payments", fsettings, HEALTHY)):
        pass  # declares the work queue, so the commands below wait in it together
    orders = [f"order-{uuid.uuid4().hex[:12]}" for _ in range(5)]
    refunds = [refund(order_id) for order_id in orders[:4]]
    failing = charge(orders[4])
    for command in (*refunds[:2], failing, *refunds[2:]):
        await send_command(channel, topology, command)

    # A batch waits long enough here for all five to be delivered into it.
    patient = fsettings.model_copy(update={"batch_wait_ms": 1000.0})
    async with running(build_app("payments", patient, FAILING)):
        parked = await wait_parked(channel, topology.parking_queue("payments"), failing.message_id)
        for command in refunds:
            await replies.wait(command.message_id)

    (split,) = [r for r in batch_failures.records if "one by one" in r.getMessage()]
    assert getattr(split, "size", None) == 5  # the five waited together, in one batch
    answered = [replies.replies_to(command.message_id) for command in refunds]
    assert [len(r) for r in answered] == [1, 1, 1, 1]
    assert all(isinstance(r[0].envelope.payload, o.PaymentRefunded) for r in answered)
    assert [await inbox_rows(db, command.message_id) for command in refunds] == [1, 1, 1, 1]
    async with db.connect() as conn:
        entries = await conn.scalar(select(func.count()).where(pay.ledger.c.order_id.in_(orders)))
    assert entries == 4  # one void entry per refund before any charge; no charge written
    assert parked.headers[H_REASON] == ParkReason.RETRIES_EXHAUSTED.value
    assert replies.replies_to(failing.message_id) == []
    assert await inbox_rows(db, failing.message_id) == 0
