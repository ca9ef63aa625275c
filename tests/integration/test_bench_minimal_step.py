"""The bench's minimal step is a correct step, so the orchestrator is compared with a fair
floor: duplicates change nothing, a saga that moved meanwhile rolls the whole batch back, and
every command is written to the outbox in the step's transaction."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sagaline.settings import Settings
from sagaline_tools.bench.env import asyncpg_dsn
from sagaline_tools.bench.minimal_flow import Event, parse_event
from sagaline_tools.bench.minimal_step import TABLES, Conflict, apply
from sagaline_tools.bench.workload import order_envelope
from tests.conftest import own_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def dsn(settings: Settings) -> AsyncIterator[str]:
    async with own_database(settings) as own:
        yield asyncpg_dsn(own.database_url)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(TABLES)
        yield connection
    finally:
        await connection.close()


def submitted(index: int) -> Event:
    return parse_event(order_envelope("it", index).to_json())


def reply(to: Event, event_type: str) -> Event:
    return Event(uuid.uuid4(), to.saga_id, event_type, {"order_id": to.payload["order_id"]})


async def counts(conn: asyncpg.Connection) -> tuple[int, int, int]:
    return (
        await conn.fetchval("SELECT count(*) FROM bench_minimal.inbox"),
        await conn.fetchval("SELECT count(*) FROM bench_minimal.sagas"),
        await conn.fetchval("SELECT count(*) FROM bench_minimal.outbox"),
    )


async def test_a_batch_starts_advances_and_writes_its_commands(conn: asyncpg.Connection) -> None:
    first, second = submitted(1), submitted(2)
    commands, rows = await apply(conn, [first, second, first])  # the second copy is skipped
    assert [c[2] for c in commands] == ["ProcessPayment", "ProcessPayment"]
    assert len(rows) == 2
    assert await counts(conn) == (2, 2, 2)
    commands, rows = await apply(conn, [reply(first, "PaymentProcessed")])
    assert [c[2] for c in commands] == ["ReserveInventory"]
    row = await conn.fetchrow("SELECT state, version FROM bench_minimal.sagas WHERE id = $1",
                              first.saga_id)  # fmt: skip
    assert (row["state"], row["version"]) == ("awaiting_inventory", 2)
    body = json.loads(await conn.fetchval("SELECT body FROM bench_minimal.outbox WHERE id = $1",
                                          rows[0]))  # fmt: skip
    assert body["payload"]["lines"] == first.payload["lines"]


async def test_a_duplicate_delivery_changes_nothing(conn: asyncpg.Connection) -> None:
    first = submitted(1)
    await apply(conn, [first])
    paid = reply(first, "PaymentProcessed")
    await apply(conn, [paid])
    before = await counts(conn)
    assert await apply(conn, [paid]) == ([], [])
    assert await apply(conn, [first]) == ([], [])
    assert await counts(conn) == before


async def test_a_saga_moved_meanwhile_rolls_the_batch_back(
    conn: asyncpg.Connection, dsn: str
) -> None:
    first, other = submitted(1), submitted(2)
    await apply(conn, [first])
    before = await counts(conn)
    # Another step moves the saga on and commits between this batch's read and its
    # compare-and-set: it holds the row while the batch reads, and commits once the batch's
    # UPDATE waits for it.
    rival = await asyncpg.connect(dsn)
    try:
        rival_tx = rival.transaction()
        await rival_tx.start()
        await rival.execute(
            "UPDATE bench_minimal.sagas SET version = version + 1 WHERE id = $1", first.saga_id
        )
        batch = asyncio.create_task(apply(conn, [other, reply(first, "PaymentProcessed")]))
        async with asyncio.timeout(20):
            while not await rival.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                conn.get_server_pid(),
            ):
                await asyncio.sleep(0.02)
        await rival_tx.commit()
        with pytest.raises(Conflict):
            await batch
    finally:
        await rival.close()
    inbox, sagas, outbox = await counts(conn)
    assert (inbox, sagas, outbox) == before  # the new saga, the inbox rows, the command: gone
