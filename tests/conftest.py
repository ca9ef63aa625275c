"""Shared fixtures: real RabbitMQ and PostgreSQL, with names unique to this test run.

AMQP_URL / DATABASE_URL point at running services; without them, testcontainers starts them
where a Docker daemon answers; otherwise the local defaults are used. Every run gets its own
database and its own broker namespace, both removed afterwards even when tests fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from sagaline.migrate import upgrade
from sagaline.settings import Settings

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def service_urls() -> Iterator[tuple[str, str]]:
    amqp = os.environ.get("AMQP_URL")
    db = os.environ.get("DATABASE_URL")
    containers: list[Any] = []  # testcontainers' containers, stopped at the end
    if (amqp is None or db is None) and _docker_available():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        if amqp is None:
            rabbit = RabbitMqContainer("rabbitmq:3.10-management").start()
            containers.append(rabbit)
            amqp = (
                f"amqp://guest:guest@{rabbit.get_container_host_ip()}:"
                f"{rabbit.get_exposed_port(5672)}/"
            )
        if db is None:
            pg = PostgresContainer("postgres:15", driver=None).start()
            containers.append(pg)
            db = pg.get_connection_url()
    try:
        yield amqp or DEFAULT_AMQP, db or DEFAULT_DB
    finally:
        for container in containers:
            container.stop()


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(
        make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def own_database(settings: Settings, **changes: Any) -> AsyncIterator[Settings]:
    """`settings` pointed at a fresh, migrated database of its own (dropped afterwards), with
    `changes` applied. For tests that leave outbox rows behind or run a relay: every relay
    publishes every unpublished row of its database, whatever test wrote it."""
    database = f"{make_url(settings.database_url).database}_{uuid.uuid4().hex[:6]}"
    own = settings.model_copy(
        update={"database_url": _with_database(settings.database_url, database), **changes}
    )
    await upgrade(own)
    try:
        yield own
    finally:
        await _drop_database(_with_database(settings.database_url, "postgres"), database)


CONSUMERS = (
    "orchestrator",
    "payments",
    "inventory",
    "shipping",
    "courses",
    "notifications",
    "documents",
    "approvals",
)


async def delete_namespace(settings: Settings, extra_consumers: tuple[str, ...] = ()) -> None:
    """Delete the queues and exchanges of a test namespace (deleting a missing queue is a no-op)."""
    from sagaline.messaging.declare import delete_consumer, delete_exchanges

    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        for consumer in (*CONSUMERS, *extra_consumers):
            await delete_consumer(channel, settings.topology, consumer)
        await delete_exchanges(channel, settings.topology)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def settings(service_urls: tuple[str, str], run_id: str) -> Iterator[Settings]:
    """Settings for this run: a fresh, migrated database and a private broker namespace."""
    amqp, admin_db = service_urls
    database = f"sagaline_test_{run_id}"
    value = Settings(
        amqp_url=amqp,
        database_url=_with_database(admin_db, database),
        namespace=f"t{run_id}",
        retry_delays=(0.2, 0.4),
        step_timeout_seconds=60.0,
    )
    asyncio.run(upgrade(value))
    try:
        yield value
    finally:
        try:
            asyncio.run(delete_namespace(value))
        finally:
            asyncio.run(_drop_database(admin_db, database))


@pytest.fixture
async def amqp_connection(
    settings: Settings,
) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        yield connection
    finally:
        await connection.close()
