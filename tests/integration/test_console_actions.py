"""Console actions that reach the broker: a purge of a group by an admin, and a replay job
started from the console, run by the console's job loop, paused and resumed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import unquote_plus

import aio_pika
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from sagaline.db import create_unpooled_engine
from sagaline.messaging.parking import ParkingQueues
from sagaline.settings import Settings
from sagaline_tools.console.accounts import Accounts
from sagaline_tools.console.app import build_app
from sagaline_tools.console.index import FeedIngest, declare_feed, feed_queue
from sagaline_tools.console.jobs import ReplayJobs
from sagaline_tools.console.runner import JobLoop
from sagaline_tools.console.settings import ConsoleSettings
from sagaline_tools.console.tables import audit, parked, replay_jobs
from tests.conftest import own_database
from tests.integration.console_support import declare, depth, drain, park, private_namespace
from tests.integration.test_console_rights import PASSWORD, act, csrf, login

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CONSUMERS = ["orchestrator", "payments"]


@pytest.fixture(scope="module")
async def own(settings: Settings) -> AsyncIterator[Settings]:
    async with own_database(settings) as db_settings, private_namespace(db_settings) as value:
        await declare(value)
        connection = await aio_pika.connect(value.amqp_url)
        await declare_feed(await connection.channel(), value.topology, CONSUMERS)
        await connection.close()
        engine = create_unpooled_engine(value.sqlalchemy_url)
        await Accounts(engine).add("ada", "admin", PASSWORD)
        await Accounts(engine).add("olga", "operator", PASSWORD)
        await engine.dispose()
        yield value


@pytest.fixture
async def db(own: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(own.sqlalchemy_url)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE console.parked, console.replay_jobs CASCADE"))
    await drain(own, own.topology.parking_queue("payments"))
    await drain(own, feed_queue(own.topology))
    yield engine
    await engine.dispose()


@pytest.fixture
def web(own: Settings) -> Iterator[TestClient]:
    app = build_app(own, ConsoleSettings(), background=False)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as value:
        yield value


async def index_all(own: Settings, db: AsyncEngine, count: int) -> None:
    connection = await aio_pika.connect(own.amqp_url)
    try:
        ingest = FeedIngest(db, connection, own.topology, CONSUMERS)
        async with asyncio.timeout(20):
            while ingest.ingested < count:
                await ingest.run_once()
        await ingest.close()
    finally:
        await connection.close()


async def group_of(db: AsyncEngine, reason: str) -> dict[str, Any]:
    async with db.connect() as conn:
        row = (await conn.execute(select(parked).where(parked.c.reason == reason))).first()
    assert row is not None
    return {"queue": row.queue, "park_reason": row.reason, "fingerprint": row.fingerprint}


async def test_an_admin_purges_a_group_after_a_preview(
    web: TestClient, own: Settings, db: AsyncEngine
) -> None:
    await park(own, 3, reason="malformed-json", error="JSONDecodeError at char {n}")
    keep = await park(own, 2, reason="retries-exhausted")
    await index_all(own, db, 5)
    group = await group_of(db, "malformed-json")
    login(web, "ada")
    token = csrf(web)
    preview = web.post("/dlq/preview", data={"csrf": token, "verb": "purge", **group})
    assert preview.status_code == 200
    assert "Purge 3 message(s)? (dry run)" in preview.text
    assert await depth(own, own.topology.parking_queue("payments")) == 5  # a preview takes none
    purged = act(web, "/dlq/purge", token, **group)
    assert purged.status_code == 303, purged.text
    assert "purged 3 message(s)" in unquote_plus(purged.headers["location"])
    left = await drain(own, own.topology.parking_queue("payments"))
    assert sorted(m.message_id or "" for m in left) == sorted(keep)
    async with db.connect() as conn:
        reasons = (await conn.execute(select(parked.c.reason))).scalars().all()
        trail = (await conn.execute(select(audit.c.actor, audit.c.action, audit.c.reason))).all()
    assert sorted(reasons) == ["retries-exhausted"] * 2
    assert trail.count(("operator:ada", "dlq-purge", "ticket 42")) == 3


async def test_a_console_replay_job_runs_pauses_and_resumes(
    web: TestClient, own: Settings, db: AsyncEngine
) -> None:
    ids = await park(own, 4)
    await index_all(own, db, 4)
    login(web, "olga")
    token = csrf(web)
    group = await group_of(db, "retries-exhausted")
    started = act(web, "/dlq/replay", token, rate="1000", **group)
    assert started.status_code == 303, started.text
    job_id = int(re.findall(r"/dlq/jobs/(\d+)", started.headers["location"])[0])
    paused = act(web, f"/dlq/jobs/{job_id}/pause", token)
    assert paused.status_code == 303, paused.text
    assert (await ReplayJobs(db).get(job_id)).status == "paused"
    assert act(web, f"/dlq/jobs/{job_id}/pause", token).status_code == 400  # not running

    connection = await aio_pika.connect(own.amqp_url)
    try:
        parking = ParkingQueues(connection, own.topology, CONSUMERS)
        loop = JobLoop(ReplayJobs(db), parking)
        assert await loop.run_once() is False  # a paused job is not picked up
        assert act(web, f"/dlq/jobs/{job_id}/resume", token).status_code == 303
        assert await loop.run_once() is True
    finally:
        await connection.close()
    job = await ReplayJobs(db).get(job_id)
    assert (job.status, job.replayed, job.total, job.created_by) == ("done", 4, 4, "olga")
    progress = web.get(f"/dlq/jobs/{job_id}/progress").json()
    assert (progress["status"], progress["replayed"], progress["pending"]) == ("done", 4, 0)
    copies = await drain(own, own.topology.work_queue("payments"))
    assert sorted(m.message_id or "" for m in copies) == sorted(ids)
    async with db.connect() as conn:
        assert (await conn.execute(select(parked))).all() == []
        actions = (await conn.execute(select(audit.c.action).order_by(audit.c.id))).scalars().all()
        assert (await conn.execute(select(replay_jobs.c.runner))).scalar_one().startswith("console")
    assert [a for a in actions if "job" in a] == ["dlq-replay-job", "job-pause", "job-resume"]
    assert actions.count("dlq-replay") == 4  # one per message, on its saga's timeline
