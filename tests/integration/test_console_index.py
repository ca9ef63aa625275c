"""The parked-message index on the real broker and database: the feed fills it, replays and
purges through sagaline empty it, and the reconciler repairs what changed behind its back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from sagaline_tools.console.index import FeedIngest, Reconciler, declare_feed, feed_queue
from sagaline_tools.console.tables import parked
from tests.conftest import own_database
from tests.integration.console_support import (
    declare,
    drain,
    park,
    parking_queues,
    private_namespace,
)
from tests.integration.test_admin import cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CONSUMERS = ["orchestrator", "payments"]


@pytest.fixture(scope="module")
async def own(settings: Settings) -> AsyncIterator[Settings]:
    async with own_database(settings) as value:
        yield value


@pytest.fixture
async def ns(own: Settings) -> AsyncIterator[Settings]:
    async with private_namespace(own) as value:
        await declare(value)
        yield value


@pytest.fixture
async def engine(own: Settings) -> AsyncIterator[AsyncEngine]:
    value = create_unpooled_engine(own.sqlalchemy_url)
    async with value.begin() as conn:
        await conn.execute(text("TRUNCATE console.parked"))
    yield value
    await value.dispose()


@pytest.fixture
async def connection(ns: Settings) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    value = await aio_pika.connect(ns.amqp_url)
    await declare_feed(await value.channel(), ns.topology, CONSUMERS)
    yield value
    await value.close()


async def ingest_all(ingest: FeedIngest, expected: int) -> None:
    async with asyncio.timeout(20):
        while ingest.ingested < expected:
            await ingest.run_once()


async def rows(engine: AsyncEngine) -> list[object]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(parked).order_by(parked.c.id))).all())


async def test_the_feed_indexes_every_parked_copy_with_its_group(
    ns: Settings, engine: AsyncEngine, connection: aio_pika.abc.AbstractConnection
) -> None:
    saga_id = uuid.uuid4()
    ids = await park(ns, 2, error="OrderNotFound: order {n} of 'cust-9' missing", saga_id=saga_id)
    other = await park(ns, 1, reason="schema-invalid", error="amount_cents: must be positive")
    await park(ns, 1, ids=[ids[0]])  # the same copy parked twice (a duplicate publish)
    ingest = FeedIngest(engine, connection, ns.topology, CONSUMERS)
    try:
        await ingest_all(ingest, 4)
    finally:
        await ingest.close()

    found = await rows(engine)
    assert len(found) == 3
    by_id = {r.message_id: r for r in found}  # type: ignore[attr-defined]
    first, second, third = by_id[ids[0]], by_id[ids[1]], by_id[other[0]]
    assert (first.copies, second.copies, third.copies) == (2, 1, 1)
    assert first.queue == ns.topology.parking_queue("payments")
    # One group for the two "order N not found" errors, another for the schema error.
    assert first.fingerprint == second.fingerprint != third.fingerprint
    assert first.error_pattern == "OrderNotFound: order <n> of <value> missing"
    assert (first.saga_id, first.message_type, first.reason) == (
        saga_id,
        "ProcessPayment",
        "retries-exhausted",
    )
    assert first.body == b'{"secret": "payload"}' and first.headers["x-sagaline-attempt"] == 3
    # The parking queue itself is untouched: the broker stays the home of the messages.
    async with parking_queues(ns) as parking:
        assert await parking.depth(ns.topology.parking_queue("payments")) == 4
        assert await parking.depth(feed_queue(ns.topology)) == 0


async def test_replays_and_purges_through_sagaline_leave_the_index(
    ns: Settings, engine: AsyncEngine, connection: aio_pika.abc.AbstractConnection
) -> None:
    one, two, three = await park(ns, 3)
    ingest = FeedIngest(engine, connection, ns.topology, CONSUMERS)
    try:
        await ingest_all(ingest, 3)
    finally:
        await ingest.close()
    replayed = await cli(ns, "dlq", "replay", "payments", "--id", one)
    purged = await cli(ns, "dlq", "purge", "payments", "--id", two, "--yes")
    assert replayed.exit_code == 0 and purged.exit_code == 0, replayed.stderr + purged.stderr
    assert [r.message_id for r in await rows(engine)] == [three]  # type: ignore[attr-defined]


async def test_the_reconciler_repairs_what_changed_behind_its_back(
    ns: Settings, engine: AsyncEngine, connection: aio_pika.abc.AbstractConnection
) -> None:
    queue = ns.topology.parking_queue("payments")
    # Their feed copies lost (parked before the feed existed, or dropped at its length limit).
    early = await park(ns, 2)
    await drain(ns, feed_queue(ns.topology))
    async with parking_queues(ns) as parking:
        reconciler = Reconciler(engine, parking)
        await reconciler.check()  # a difference seen once may be a count caught mid-move
        assert await rows(engine) == []
        await reconciler.check()
        assert sorted(r.message_id for r in await rows(engine)) == sorted(early)  # type: ignore[attr-defined]

        # Purged behind sagaline's back (the management UI): dropped after two passes, not one
        # (a pass cannot tell a purged message from one someone else holds for a moment).
        await drain(ns, queue)
        await reconciler.check()
        await reconciler.check()
        async with engine.connect() as conn:
            missing = await conn.scalar(
                select(func.count()).where(parked.c.missing_since.is_not(None))
            )
        assert missing == 2
        await reconciler.check()
        await reconciler.check()
        assert await rows(engine) == []
        assert reconciler.passes == 3
