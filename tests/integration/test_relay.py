"""The outbox relay on a real broker and database: a row for an exchange that does not exist is
held (and reported) without stopping the other rows, and without closing any channel but the
relay's own; it goes out once the exchange appears."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.relay import OutboxRelay
from orchestrator.store.plan import OutboxMessage
from orchestrator.store.tables import outbox
from sagaline.db import create_engine
from sagaline.settings import Settings
from tests.conftest import own_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    # A database of its own: the relay publishes every unpublished row of its database.
    async with own_database(settings) as own:
        value = create_engine(own, pool_size=2)
        try:
            yield value
        finally:
            await value.dispose()


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    value = await aio_pika.connect_robust(settings.amqp_url)
    try:
        yield value
    finally:
        await value.close()


async def _add_rows(
    engine: AsyncEngine, exchange: str, count: int, routing_key: str = "RelayProbe"
) -> list[uuid.UUID]:
    """Rows nobody dispatches (no lease): the relay loop's to publish."""
    return [m.message_id for m in await _add_messages(engine, exchange, count, routing_key)]


async def _add_messages(
    engine: AsyncEngine,
    exchange: str,
    count: int,
    routing_key: str = "RelayProbe",
    lease: timedelta | None = None,
) -> list[OutboxMessage]:
    """Rows as a batch writes them; with `lease` as a batch that dispatches them itself."""
    now = datetime.now(UTC)
    messages = [
        OutboxMessage(
            uuid.uuid4(), uuid.uuid4(), exchange, routing_key, "RelayProbe", b"{}", {}, now
        )
        for _ in range(count)
    ]
    async with engine.begin() as conn:
        until = None if lease is None else await conn.scalar(select(func.now() + lease))
        await conn.execute(
            insert(outbox),
            [{**m._asdict(), "dispatch_until": until} for m in messages],
        )
    return messages


async def _leased(engine: AsyncEngine) -> set[uuid.UUID]:
    async with engine.connect() as conn:
        rows = await conn.scalars(
            select(outbox.c.message_id).where(outbox.c.dispatch_until.is_not(None))
        )
        return set(rows)


async def _exchange_with_queue(
    channel: aio_pika.abc.AbstractChannel, prefix: str
) -> tuple[aio_pika.abc.AbstractExchange, AbstractQueue]:
    """A fresh topic exchange (deleted with its last binding) and a queue taking all of it."""
    exchange = await channel.declare_exchange(
        f"{prefix}-{uuid.uuid4().hex[:6]}", aio_pika.ExchangeType.TOPIC, auto_delete=True
    )
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "#")
    return exchange, queue


async def _listening(relay: OutboxRelay) -> None:
    """Until the started relay's first round has connected its listener (within 10 s)."""
    async with asyncio.timeout(10):
        while relay._listener is None:
            await asyncio.sleep(0.05)


async def _unpublished(engine: AsyncEngine) -> set[uuid.UUID]:
    async with engine.connect() as conn:
        rows = await conn.scalars(
            select(outbox.c.message_id).where(outbox.c.published_at.is_(None))
        )
        return set(rows)


async def _receive(queue: AbstractQueue, count: int) -> list[uuid.UUID]:
    """The message ids of the next `count` messages on the queue (acked), within 10 s."""
    received: list[uuid.UUID] = []
    async with asyncio.timeout(10):
        while len(received) < count:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            received.append(uuid.UUID(message.message_id or ""))
    return received


async def test_a_missing_exchange_holds_only_its_rows_and_closes_no_other_channel(
    engine: AsyncEngine, connection: AbstractRobustConnection, run_id: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    present, missing = f"t{run_id}-relay-{tag}", f"t{run_id}-relay-missing-{tag}"
    channel = await connection.channel()  # stands for the intake's channel on the same connection
    exchange = await channel.declare_exchange(
        present, aio_pika.ExchangeType.TOPIC, auto_delete=True
    )
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "#")
    # The held rows come first: a relay that claimed them every round would starve the rest.
    held = await _add_rows(engine, missing, 5)
    good = await _add_rows(engine, present, 5)
    relay = OutboxRelay(engine, connection, commands_exchange=f"t{run_id}-commands", batch_size=5)
    try:
        # The first claim holds only held rows; the relay claims again without their exchange.
        assert await relay.publish_batch() == 5
        assert relay.missing_exchanges == {missing}
        assert await _unpublished(engine) == set(held)
        assert not channel.is_closed
        assert sorted(await _receive(queue, len(good))) == sorted(good)

        late = await channel.declare_exchange(
            missing, aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        await queue.bind(late, "#")
        relay.missing_recheck_seconds = 0  # look again now rather than in ten seconds
        assert await relay.publish_batch() == 5
        assert await _unpublished(engine) == set()
        assert relay.missing_exchanges == set()
    finally:
        await relay.stop()
        await channel.close()


async def test_dispatch_publishes_its_leased_rows_which_the_loop_leaves_alone_until_a_sweep(
    engine: AsyncEngine, connection: AbstractRobustConnection, run_id: str
) -> None:
    channel = await connection.channel()
    exchange, queue = await _exchange_with_queue(channel, f"t{run_id}-dispatch")
    minute = timedelta(minutes=1)
    mine = await _add_messages(engine, exchange.name, 4, lease=minute)
    others = await _add_messages(engine, exchange.name, 3, lease=minute)  # another dispatch's
    expired = await _add_messages(engine, exchange.name, 2, lease=-minute)  # a dead writer's
    relay = OutboxRelay(engine, connection, commands_exchange=f"t{run_id}-commands")
    try:
        # The loop takes only rows whose lease ran out: the others are being dispatched.
        assert await relay.publish_batch() == 2
        assert sorted(await _receive(queue, 2)) == sorted(m.message_id for m in expired)

        # The intake's batch committed `mine`: it publishes those now. Their marks wait for
        # the next batch's write (none comes here), so they are still unmarked ...
        relay.marks.linger = 3600
        assert await relay.dispatch(mine) == 4
        assert sorted(await _receive(queue, 4)) == sorted(m.message_id for m in mine)
        assert relay.marks.pending() == {m.message_id for m in mine}

        # ... and a sweep (asked for by a redelivered duplicate) takes the other leased rows,
        # never those: they went out already.
        assert await relay.publish_batch(sweeping=True) == 3
        assert sorted(await _receive(queue, 3)) == sorted(m.message_id for m in others)
        assert await _unpublished(engine) == {m.message_id for m in mine}

        # With no write to take them, the marks go in a statement of their own.
        await relay.marks.flush()
        assert await _unpublished(engine) == set()
        # Every publish above was confirmed before its call returned: nothing more is on its way.
        assert await queue.get(fail=False) is None
    finally:
        await relay.stop()
        await channel.close()


async def test_a_sweep_never_takes_a_dispatch_of_its_own_process_in_flight(
    engine: AsyncEngine, connection: AbstractRobustConnection, run_id: str
) -> None:
    channel = await connection.channel()
    exchange, queue = await _exchange_with_queue(channel, f"t{run_id}-inflight")
    mine = await _add_messages(engine, exchange.name, 3, lease=timedelta(minutes=1))
    relay = OutboxRelay(engine, connection, commands_exchange=f"t{run_id}-commands")
    publish, swept = relay._publish, asyncio.Event()

    async def after_the_sweep(rows: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        await swept.wait()
        return await publish(rows)

    relay._publish = after_the_sweep  # type: ignore[method-assign]
    try:
        dispatching = asyncio.create_task(relay.dispatch(mine))
        await asyncio.sleep(0.2)  # the dispatch is waiting in its publish
        relay._publish = publish  # type: ignore[method-assign]
        assert await relay.publish_batch(sweeping=True) == 0
        swept.set()
        assert await dispatching == 3
        assert sorted(await _receive(queue, 3)) == sorted(m.message_id for m in mine)
        assert await queue.get(fail=False) is None  # each went out once
    finally:
        swept.set()
        await relay.stop()
        await channel.close()


async def test_a_command_no_queue_takes_stays_in_the_outbox_for_the_loop_and_the_rest_go_out(
    engine: AsyncEngine, connection: AbstractRobustConnection, run_id: str
) -> None:
    """Commands are published mandatory: one the broker returns (no queue bound for its type,
    a deployment mistake) is not marked sent, and the rows published with it are. Its lease
    is released: the relay loop keeps trying it."""
    channel = await connection.channel()
    commands = await channel.declare_exchange(
        f"t{run_id}-commands-{uuid.uuid4().hex[:6]}", aio_pika.ExchangeType.DIRECT,
        auto_delete=True,
    )  # fmt: skip
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(commands, "RelayProbe")
    lease = timedelta(minutes=1)
    routable = await _add_messages(engine, commands.name, 3, lease=lease)
    (unroutable,) = await _add_messages(engine, commands.name, 1, "NobodyTakesThis", lease)
    relay = OutboxRelay(engine, connection, commands_exchange=commands.name)
    try:
        assert await relay.dispatch([*routable, unroutable]) == 3
        await relay.marks.flush()  # no batch's write here to mark the sent rows
        assert await _unpublished(engine) == {unroutable.message_id}
        assert await _leased(engine) == {m.message_id for m in routable}  # sent, lease kept
        assert sorted(await _receive(queue, 3)) == sorted(m.message_id for m in routable)
        await queue.bind(commands, "NobodyTakesThis")  # the deployment is mended
        assert await relay.publish_batch() == 1
        assert await _receive(queue, 1) == [unroutable.message_id]
    finally:
        await relay.stop()
        await channel.close()


async def test_a_failed_publish_hands_its_rows_to_the_loop_and_leaves_the_connection_clean(
    settings: Settings, connection: AbstractRobustConnection, run_id: str
) -> None:
    """A dispatch whose publish fails releases its leases, so the relay loop (which it wakes)
    publishes the rows at once; the pooled connection goes back outside any transaction."""
    async with own_database(settings) as own:
        engine = create_engine(own, pool_size=1)  # the next checkout gets the same connection
        channel = await connection.channel()
        relay = OutboxRelay(engine, connection, commands_exchange=f"t{run_id}-commands")
        try:
            exchange, queue = await _exchange_with_queue(channel, f"t{run_id}-fail")
            rows = await _add_messages(engine, exchange.name, 3, lease=timedelta(minutes=1))

            async def broker_gone(rows: object) -> list[OutboxMessage]:
                raise ConnectionError("broker gone")

            publish = relay._publish
            relay._publish = broker_gone  # type: ignore[method-assign]
            assert await relay.dispatch(rows) == 0
            async with engine.connect() as sa_conn:
                raw = await sa_conn.get_raw_connection()
                assert raw.driver_connection is not None
                assert not raw.driver_connection.is_in_transaction()
            assert await _unpublished(engine) == {m.message_id for m in rows}
            assert await _leased(engine) == set()

            relay._publish = publish  # type: ignore[method-assign]
            assert await relay.publish_batch() == 3
            assert await _unpublished(engine) == set()
            assert sorted(await _receive(queue, 3)) == sorted(m.message_id for m in rows)
        finally:
            await relay.stop()
            await channel.close()
            await engine.dispose()


async def test_a_relay_starting_sweeps_rows_its_previous_run_leased_and_never_published(
    engine: AsyncEngine, connection: AbstractRobustConnection, run_id: str
) -> None:
    """A process that died between its commit and its mark left its rows leased and nothing
    will arrive twice to ask for a sweep: its next run's relay publishes them at once."""
    channel = await connection.channel()
    exchange, queue = await _exchange_with_queue(channel, f"t{run_id}-restart")
    left = await _add_messages(engine, exchange.name, 3, lease=timedelta(minutes=1))
    relay = OutboxRelay(
        engine, connection, commands_exchange=f"t{run_id}-commands", poll_seconds=600
    )
    await relay.start()
    try:
        assert sorted(await _receive(queue, 3)) == sorted(m.message_id for m in left)
    finally:
        await relay.stop()
        await channel.close()


async def test_rows_a_dispatch_could_not_release_go_out_once_their_lease_ran_out(
    engine: AsyncEngine, connection: AbstractRobustConnection, run_id: str
) -> None:
    """The broker and the database went away during a dispatch: neither its publish nor the
    release of its leases went through. The relay wakes itself when the lease has run out, not
    at its poll."""
    channel = await connection.channel()
    exchange, queue = await _exchange_with_queue(channel, f"t{run_id}-away")
    lease = timedelta(seconds=1)
    relay = OutboxRelay(
        engine,
        connection,
        commands_exchange=f"t{run_id}-commands",
        poll_seconds=600,
        dispatch_lease_seconds=lease.total_seconds(),
    )
    await relay.start()
    try:
        await _listening(relay)
        rows = await _add_messages(engine, exchange.name, 2, lease=lease)
        execute = relay._execute

        async def database_away(statement: str) -> None:
            raise ConnectionError("database away")

        async def broker_gone(rows: object) -> list[OutboxMessage]:
            raise ConnectionError("broker gone")

        publish = relay._publish
        relay._execute = database_away  # type: ignore[method-assign]
        relay._publish = broker_gone  # type: ignore[method-assign]
        assert await relay.dispatch(rows) == 0
        relay._execute = execute  # type: ignore[method-assign]
        relay._publish = publish  # type: ignore[method-assign]
        received = await _receive(queue, 2)  # the loop's, once the lease ran out
        assert sorted(received) == sorted(m.message_id for m in rows)
        async with asyncio.timeout(10):
            while await _unpublished(engine):
                await asyncio.sleep(0.05)
    finally:
        await relay.stop()
        await channel.close()


async def test_a_mark_the_database_could_not_take_waits_and_the_row_is_not_published_again(
    engine: AsyncEngine, connection: AbstractRobustConnection, run_id: str
) -> None:
    """Rows confirmed while the database is away stay this process's: however long their mark
    waits (here their lease has run out already), the relay loop does not publish them again,
    not even in a sweep; the mark lands once the database is back."""
    channel = await connection.channel()
    exchange, queue = await _exchange_with_queue(channel, f"t{run_id}-markless")
    rows = await _add_messages(engine, exchange.name, 2, lease=-timedelta(minutes=1))
    relay = OutboxRelay(engine, connection, commands_exchange=f"t{run_id}-commands")
    relay.marks.linger = relay.marks.retry = 3600  # the test flushes by hand
    execute = relay._execute

    async def database_away(statement: str) -> None:
        raise ConnectionError("database away")

    try:
        assert await relay.dispatch(rows) == 2
        assert sorted(await _receive(queue, 2)) == sorted(m.message_id for m in rows)
        relay._execute = database_away  # type: ignore[method-assign]
        await relay.marks.flush()  # logged; the marks stay pending
        relay._execute = execute  # type: ignore[method-assign]
        assert relay.marks.pending() == {m.message_id for m in rows}
        assert await relay.publish_batch() == 0
        assert await relay.publish_batch(sweeping=True) == 0
        await relay.marks.flush()
        assert await _unpublished(engine) == set()
        assert relay.marks.pending() == set()
        assert await queue.get(fail=False) is None  # each went out once
    finally:
        await relay.stop()
        await channel.close()


async def test_a_lost_listen_connection_wakes_the_relay_to_sweep_what_it_missed(
    engine: AsyncEngine, connection: AbstractRobustConnection, run_id: str
) -> None:
    """A NOTIFY sent while the relay's LISTEN connection is gone is lost: when the connection
    drops (a database restart, a terminated backend) the relay reconnects and publishes every
    waiting row without waiting for its poll, leased rows included (a restart may have lost the
    marks of rows their dispatch had published)."""
    channel = await connection.channel()
    exchange, queue = await _exchange_with_queue(channel, f"t{run_id}-listen")
    relay = OutboxRelay(
        engine, connection, commands_exchange=f"t{run_id}-commands", poll_seconds=600
    )
    await relay.start()
    try:
        await _listening(relay)
        listener_pid = relay._listener.get_server_pid()
        waiting = await _add_rows(engine, exchange.name, 3)  # committed without a NOTIFY
        leased = await _add_messages(engine, exchange.name, 2, lease=timedelta(minutes=1))
        waiting += [m.message_id for m in leased]
        async with engine.connect() as conn:
            await conn.execute(
                select(func.pg_terminate_backend(listener_pid))  # type: ignore[arg-type]
            )
        assert sorted(await _receive(queue, 5)) == sorted(waiting)
        async with asyncio.timeout(10):
            while await _unpublished(engine):
                await asyncio.sleep(0.05)
    finally:
        await relay.stop()
        await channel.close()
