"""An operator's afternoon on real processes: a worker fails, its command is parked, the saga
is stuck; `sagaline` finds both, the fix is deployed, a replay completes the saga once; the
orchestrator's /metrics shows the transitions.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

import aio_pika
import pytest
from sqlalchemy import text

from sagaline.db import create_engine
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings
from tests.e2e.conftest import System
from tests.integration.support import order_submitted

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SKU = "ops-e2e-sku"


def sagaline(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in its own process."""
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url,
        "DATABASE_URL": settings.database_url,
        "SAGALINE_NAMESPACE": settings.namespace,
        "SAGALINE_STEP_TIMEOUT_SECONDS": "900",
        "USER": "ops-e2e",
    }
    return subprocess.run(
        [sys.executable, "-m", "sagaline_tools.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def sagaline_json(settings: Settings, *args: str) -> Any:
    result = sagaline(settings, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def metrics(system: System) -> str:
    port = system.by_name("orchestrator").port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def sample(body: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels` (0 when none)."""
    total = 0.0
    for line in body.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def prepare_and_submit(settings: Settings) -> uuid.UUID:
    from consumers.inventory.handlers import seed_stock

    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            await seed_stock(conn, {SKU: 100})
    finally:
        await engine.dispose()
    envelope = order_submitted(sku=SKU)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await publish_envelope(channel, settings.topology.events_exchange, envelope)
    finally:
        await connection.close()
    return envelope.correlation_id


async def wait_parked(settings: Settings, queue_name: str, within: float = 60.0) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        async with asyncio.timeout(within):
            while not (await queue.declare()).message_count:
                await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def wait_for(check: Any, within: float = 60.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


async def charges(settings: Settings, order_id: str) -> int:
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            value = await conn.scalar(
                text(
                    "SELECT count(*) FROM payments.ledger WHERE order_id = :o AND kind = 'charge'"
                ),
                {"o": order_id},
            )
    finally:
        await engine.dispose()
    return int(value or 0)


async def test_stuck_saga_found_fixed_and_completed_once(
    system: System, settings: Settings
) -> None:
    payments, orchestrator = system.by_name("payments"), system.by_name("orchestrator")
    system.stop(payments)
    system.start(payments, {"SAGALINE_FAIL_COMMANDS": "ProcessPayment"})
    # A step timeout far beyond this test: the saga must stay stuck until the operator acts,
    # however slow a loaded machine makes the command-line calls.
    system.stop(orchestrator)
    system.start(orchestrator, {"SAGALINE_STEP_TIMEOUT_SECONDS": "900"})
    system.wait_ready()
    before = metrics(system)

    saga_id = await prepare_and_submit(settings)
    parking = settings.topology.parking_queue("payments")
    await wait_parked(settings, parking)
    listing = sagaline_json(settings, "dlq", "list")
    queue = next(q for q in listing["queues"] if q["queue"] == parking)
    assert queue["reasons"] == {"retries-exhausted": 1}

    # What is stuck, and why: the saga waits for a command that sits in a parking queue.
    await asyncio.sleep(1.1)
    stuck = sagaline_json(settings, "saga", "list", "--stuck-for", "1s")
    assert str(saga_id) in [s["id"] for s in stuck["sagas"]]
    shown = sagaline_json(settings, "saga", "show", str(saga_id))
    (awaited,) = shown["outstanding"]
    assert (shown["state"], awaited["type"]) == ("awaiting_payment", "ProcessPayment")
    assert awaited["published_at"] is not None
    (message,) = sagaline_json(settings, "dlq", "show", "payments")["messages"]
    assert (message["message_id"], message["correlation_id"]) == (
        awaited["message_id"],
        str(saga_id),
    )
    human = sagaline(settings, "saga", "show", str(saga_id))
    assert human.returncode == 0 and "ProcessPayment" in human.stdout

    # The fix: the worker restarts without the fault; the parked command is replayed.
    system.stop(payments)
    system.start(payments)
    system.wait_ready()
    replay = sagaline(settings, "dlq", "replay", "payments", "--all")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 message(s)" in replay.stdout

    def completed() -> bool:
        state = sagaline_json(settings, "saga", "show", str(saga_id))["state"]
        return bool(state == "completed")

    await wait_for(completed, within=90.0)
    assert await charges(settings, shown["data"]["order_id"]) == 1
    # The completed order keeps its stack of compensations, which never ran: said so, lest it
    # read as if the payment had been refunded.
    done = sagaline(settings, "saga", "show", str(saga_id))
    assert "compensations registered (not run: the saga ended completed)" in done.stdout
    assert "(undone from the top)" not in done.stdout

    after = metrics(system)
    # The startup heap was frozen out of the collector's walk, the young generation is
    # collected every 10,000 new objects (the default), and pauses are exported (a run this
    # short may not make one: the unit tests observe them).
    assert sample(after, "sagaline_gc_frozen_objects") > 10_000
    assert sample(after, "sagaline_gc_young_threshold") == 10_000
    assert "# TYPE sagaline_gc_pause_seconds histogram" in after
    for source, target in (
        ("", "awaiting_payment"),
        ("awaiting_payment", "awaiting_inventory"),
        ("awaiting_shipment", "completed"),
    ):
        labels = {"workflow": "order", "from_state": source, "to_state": target}
        assert sample(after, "sagaline_transitions_total", **labels) >= (
            sample(before, "sagaline_transitions_total", **labels) + 1
        )
    assert sample(after, "sagaline_outbox_published_total") > sample(
        before, "sagaline_outbox_published_total"
    )
    # One orchestrator: its order's steps were decided from what it had committed last.
    assert sample(after, "sagaline_snapshot_guesses_total", outcome="held") > sample(
        before, "sagaline_snapshot_guesses_total", outcome="held"
    )
    assert "sagaline_time_in_state_seconds_bucket" in after
    diagram = sagaline(settings, "diagram", "order", "--saga", str(saga_id))
    assert diagram.returncode == 0, diagram.stderr
    assert diagram.stdout.rstrip().endswith("class completed current")
