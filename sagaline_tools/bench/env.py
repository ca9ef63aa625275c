"""A run's private world: its own broker namespace, its own database, its own processes.

Created at the start of a run and removed at the end (processes stopped, namespace queues and
exchanges deleted, database dropped) whatever happened in between, unless asked to keep them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import asyncpg
from sqlalchemy.engine import make_url

from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR
from sagaline.settings import Settings
from sagaline_tools.bench import cpu
from sagaline_tools.bench.procs import Child, free_port, wait_ready

log = logging.getLogger("sagaline_tools.bench")

RELAY_QUEUES = ("relay-a", "relay-b", "relay-c")
"""Consumers of the baseline's two queues (declared like work queues, deleted after the run)."""

# Inherited by no benchmarked process: fault injection would make the figures meaningless.
_STRIPPED_ENV = ("SAGALINE_CRASH_AT", "SAGALINE_FAIL_COMMANDS")


def private_database_url(database_url: str, database: str) -> str:
    return make_url(database_url).set(database=database).render_as_string(hide_password=False)


def asyncpg_dsn(database_url: str, database: str | None = None) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


@dataclass
class BenchEnv:
    base: Settings
    run_id: str
    log_dir: Path
    process_env: tuple[tuple[str, str], ...] = ()
    database_settings: tuple[tuple[str, str], ...] = ()
    random_ids: bool = False
    """Publish orders with random (version 4) ids instead of version 7 ones."""
    children: list[Child] = field(default_factory=list)
    database_created: bool = False
    servers: dict[int, str] = field(default_factory=dict)
    """pid -> "rabbitmq" / "postgresql": the local servers the URLs point at, for CPU use."""

    @property
    def namespace(self) -> str:
        return f"bench{self.run_id}"

    @property
    def database(self) -> str:
        return f"sagaline_bench_{self.run_id}"

    @property
    def settings(self) -> Settings:
        return self.base.model_copy(
            update={
                "namespace": self.namespace,
                "database_url": private_database_url(self.base.database_url, self.database),
            }
        )

    @property
    def dsn(self) -> str:
        return asyncpg_dsn(self.settings.database_url)

    async def connect_db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def create(self) -> None:
        from sagaline.migrate import upgrade

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.servers = cpu.server_pids(
            {
                "rabbitmq": urlsplit(self.base.amqp_url).port or 5672,
                "postgresql": make_url(self.base.database_url).port or 5432,
            }
        )
        self.database_created = True  # set first: a half-made database is dropped too
        await upgrade(self.settings)
        if self.database_settings:
            conn = await self.connect_db()
            try:
                for name, value in self.database_settings:
                    literal = "'" + value.replace("'", "''") + "'"
                    await conn.execute(f'ALTER DATABASE "{self.database}" SET {name} = {literal}')
            finally:
                await conn.close()

    # --- processes ----------------------------------------------------------------------------

    def child_env(self, port: int | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
        settings = self.settings
        env.update(
            {
                "AMQP_URL": settings.amqp_url,
                "DATABASE_URL": settings.database_url,
                "SAGALINE_NAMESPACE": settings.namespace,
                "SAGALINE_HTTP_HOST": "127.0.0.1",
                "SAGALINE_HTTP_PORT": str(port or 0),
            }
        )
        env.pop("SAGALINE_AMQP_URL", None)
        env.pop("SAGALINE_DATABASE_URL", None)
        env.update(dict(self.process_env))
        env.update(extra or {})
        return env

    def start_service(
        self, name: str, args: list[str], extra_env: dict[str, str] | None = None
    ) -> Child:
        """A sagaline process (`-m orchestrator`, `-m consumers payments`) with its /readyz."""
        port = free_port()
        env = self.child_env(port, extra_env)
        child = Child(name, args, self.log_dir / f"{name}.log", env, port=port)
        self.children.append(child)
        child.start()
        return child

    def start_helper(self, name: str, module: str, args: list[str]) -> Child:
        """One of the benchmark's own processes; it reports on stdout, one JSON line at a time."""
        child = Child(
            name, ["-m", module, *args], self.log_dir / f"{name}.log", self.child_env(None)
        )
        self.children.append(child)
        child.start(capture_stdout=True)
        return child

    async def start_orchestrator(self, extra_env: dict[str, str] | None = None) -> Child:
        child = self.start_service("orchestrator", ["-m", "orchestrator"], extra_env)
        await wait_ready([child])
        return child

    async def stop(self, *children: Child) -> None:
        for child in children:
            code = await child.stop()
            if code not in (0, None, -15):
                log.warning("%s exited with %s (log %s)", child.name, code, child.log_path)
            with contextlib.suppress(ValueError):
                self.children.remove(child)

    async def stop_all(self) -> None:
        # Reverse start order: workers and helpers before the orchestrator they talk to.
        await self.stop(*reversed(self.children))

    # --- state between sections ---------------------------------------------------------------

    async def reset(self, schemas: tuple[str, ...] = ("saga",)) -> None:
        """Empty every table of the saga store (and of `schemas`) and every work queue:
        sections start clean."""
        conn = await self.connect_db()
        try:
            tables = await conn.fetch(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[])",
                list(schemas),
            )
            if tables:
                names = ", ".join(f'"{r["schemaname"]}"."{r["tablename"]}"' for r in tables)
                await conn.execute(f"TRUNCATE {names} RESTART IDENTITY")
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()
        await self.purge_queues()

    async def purge_queues(self) -> None:
        topology = self.settings.topology
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            for consumer in (ORCHESTRATOR, *WORKER_COMMANDS):
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(topology.work_queue(consumer), passive=True)
                    await queue.purge()
                except aio_pika.exceptions.ChannelClosed:
                    pass  # not declared in this run
        finally:
            await connection.close()

    # --- teardown -----------------------------------------------------------------------------

    async def destroy(self, keep: bool) -> list[str]:
        """Stop everything; unless `keep`, delete the namespace and drop the database.

        Returns the problems met (each step is attempted even when an earlier one failed).
        """
        problems: list[str] = []
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("stopping processes", self.stop_all)
        ]
        if not keep:
            steps.append((f"deleting namespace {self.namespace}", self.delete_namespace))
            if self.database_created:
                steps.append((f"dropping database {self.database}", self.drop_database))
        for what, action in steps:
            try:
                async with asyncio.timeout(120):
                    await action()
            except Exception as exc:
                problems.append(f"{what}: {type(exc).__name__} {exc}".strip())
        return problems

    async def delete_namespace(self) -> None:
        from sagaline.messaging.declare import delete_consumer, delete_exchanges

        topology = self.settings.topology
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            channel = await connection.channel()
            for consumer in (ORCHESTRATOR, *WORKER_COMMANDS, *RELAY_QUEUES):
                await delete_consumer(channel, topology, consumer)
            await delete_exchanges(channel, topology)
        finally:
            await connection.close()

    async def drop_database(self) -> None:
        admin = await asyncpg.connect(asyncpg_dsn(self.base.database_url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()
