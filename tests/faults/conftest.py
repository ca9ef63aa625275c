"""Fixtures of the fault-injection suite: a private namespace, processes, workload, checker."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaline.db import create_engine
from sagaline.messaging import nodes
from sagaline.messaging.declare import delete_consumer, delete_exchanges
from sagaline.settings import Settings
from tests.conftest import own_database
from tests.faults.checker import (
    CONSUMERS,
    REPORTS,
    Checker,
    Report,
    declare_tap,
    tap_queue,
    wait_for_end,
    wait_for_quiet_queues,
)
from tests.faults.harness import Harness
from tests.faults.workload import Order, Shop, Workload

BASE_ENV = {
    # A stop that waits on a held delivery should not cost the default 15 s.
    "SAGALINE_GRACEFUL_TIMEOUT_SECONDS": "5",
    # The orchestrator's parking sampler takes parked messages unacknowledged while it counts
    # them; the suite reads (and replays) parking queues itself, so keep the sampler out of it.
    "SAGALINE_PARKING_SCAN_SECONDS": "3600",
    "SAGALINE_LOG_LEVEL": "INFO",
}


@dataclass
class Scenario:
    name: str
    settings: Settings
    harness: Harness
    workload: Workload
    engine: AsyncEngine
    connection: AbstractRobustConnection
    report: Report
    extra_inputs: list[uuid.UUID] = field(default_factory=list)

    def shop(self) -> Shop:
        return Shop(self.settings)

    async def wait_for_end(self, within: float = 90.0) -> None:
        await wait_for_end(self.engine, self.workload.orders, within)

    def checker(self, expected_parked: Mapping[str, Mapping[str, str]] | None = None) -> Checker:
        return Checker(
            self.settings,
            self.engine,
            self.workload,
            self.report,
            expected_parked=expected_parked or {},
            extra_inputs=self.extra_inputs,
        )

    async def settle(self, orders: list[Order], label: str, within: float = 60.0) -> None:
        """One phase's orders reached their end state and meet the database invariants."""
        await wait_for_end(self.engine, orders, within)
        checker = self.checker()
        await checker.check_database(orders)
        checker.raise_problems(f"after {label}: ")

    async def verify(
        self,
        *,
        within: float = 90.0,
        expected_parked: Mapping[str, Mapping[str, str]] | None = None,
        conflicts: float | None = None,
    ) -> Report:
        """Wait for the end state and for the work queues to stay empty, stop every process,
        then run every check."""
        began = time.monotonic()
        await self.wait_for_end(within)
        self.harness.timings["end"] = time.monotonic() - began
        began = time.monotonic()
        await wait_for_quiet_queues(self.connection, self.settings.topology, within=30)
        self.harness.timings["quiet"] = time.monotonic() - began
        await self.harness.stop_all()
        if conflicts is not None:
            self.report.conflicts = conflicts
        checker = self.checker(expected_parked)
        began = time.monotonic()
        try:
            return await checker.check(self.connection, self.harness.logs())
        finally:
            self.harness.timings["check"] = time.monotonic() - began
            self.report.timings = self.harness.timings


@asynccontextmanager
async def open_scenario(
    base: Settings,
    tmp_path: Path,
    name: str,
    *,
    base_env: dict[str, str] | None = None,
    secret: str | None = None,
    quorum_tap: bool = False,
) -> AsyncIterator[Scenario]:
    """A private broker namespace and a fresh, migrated database of its own on `base`'s
    broker and server; both removed afterwards.

    A database per scenario, because every relay publishes every unpublished outbox row of its
    database, whatever namespace wrote it: rows another test left behind would be published
    to exchanges that no longer exist. `quorum_tap`: on a cluster (checker.declare_tap).
    """
    tag = uuid.uuid4().hex[:6]
    async with own_database(base, namespace=f"{base.namespace}-{tag}") as settings:
        harness = Harness(settings, tmp_path, base_env={**BASE_ENV, **(base_env or {})})
        engine = create_engine(settings, pool_size=4)
        connection = await nodes.connect_robust(settings.amqp_url, reconnect_interval=0.5)
        try:
            channel = await connection.channel()
            await declare_tap(channel, settings.topology, quorum=quorum_tap)
            await channel.close()
            workload = Workload(f"f{tag}", secret=secret)
            await workload.seed(engine)
            yield Scenario(name, settings, harness, workload, engine, connection, Report(name))
        finally:
            try:
                await harness.stop_all()
            finally:
                with contextlib.suppress(Exception):
                    await _delete_namespace(connection, settings)
                await connection.close()
                await engine.dispose()


async def _delete_namespace(connection: AbstractRobustConnection, settings: Settings) -> None:
    channel = await connection.channel()
    topology = settings.topology
    for consumer in CONSUMERS:
        await delete_consumer(channel, topology, consumer)
    await channel.queue_delete(tap_queue(topology), if_unused=False, if_empty=False)
    await delete_exchanges(channel, topology)
    await channel.close()


@pytest.fixture(scope="session")
def logs_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Process logs of this run, outside pytest's basetemp: concurrent pytest sessions on one
    machine prune each other's old basetemp directories, logs included. Kept on failure, or
    always with SAGALINE_FAULTS_KEEP_LOGS=1."""
    root = Path(tempfile.mkdtemp(prefix="sagaline-faults-"))
    yield root
    if not request.session.testsfailed and not os.environ.get("SAGALINE_FAULTS_KEEP_LOGS"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def log_dir(logs_root: Path, request: pytest.FixtureRequest) -> Path:
    path = logs_root / re.sub(r"[^\w.-]+", "_", request.node.name)[:80]
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def scenario(
    settings: Settings, log_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Scenario]:
    async with open_scenario(settings, log_dir, request.node.name) as value:
        yield value


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORTS:
        return
    terminalreporter.section("fault scenarios (duplicates are allowed; they are counted)")
    for report in REPORTS:
        terminalreporter.write_line(report.line())
