"""A workflow change deployed while sagas of it run, through real processes.

Orders start under version 1 of the order workflow while the inventory worker is down, so
they wait in awaiting_inventory. The orchestrator is then redeployed with version 2
(tests/order_v2.py: awaiting_inventory renamed reserving_stock, a packing step added) and more
orders start under it. Half of the waiting version-1 sagas are migrated with `sagaline saga
migrate` (dry run first), the other half are left alone. When inventory is back, every saga
finishes: the ones left alone under version 1's machine (no packing), the migrated ones and
the new ones under version 2's (packing), with balanced ledgers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from contracts.envelope import Envelope, new_envelope
from sagaline.db import create_engine
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings
from tests.e2e.conftest import Process, System, _free_port
from tests.e2e.diagnostics import final_states
from tests.e2e.test_order_e2e import _ledger_by_order, _wait_outbox_drained

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
V2 = {"SAGALINE_WORKFLOWS": "tests.order_v2:WORKFLOWS"}
# Long enough that no saga times out while the inventory worker is down.
SLOW_STEPS = {"SAGALINE_STEP_TIMEOUT_SECONDS": "600"}
PLENTY, NONE_LEFT = "versions-sku-plenty", "versions-sku-none"
STOCK = {PLENTY: 1_000, NONE_LEFT: 0}


def _order(group: str, index: int) -> Envelope[o.OrderSubmitted]:
    sku = NONE_LEFT if index == 0 else PLENTY  # one per group fails and is compensated
    return new_envelope(
        o.OrderSubmitted(
            order_id=f"versions-{group}-{uuid.uuid4().hex[:12]}",
            customer_id=f"customer-{index}",
            amount_cents=1_000 + index,
            currency="EUR",
            card_token="tok_ok",
            lines=(o.OrderLine(sku=sku, quantity=1),),
            ship_to=o.Address(country="DE", postcode="10115", city="Berlin"),
        ),
        correlation_id=uuid.uuid4(),
    )


async def _publish(settings: Settings, envelopes: list[Envelope[o.OrderSubmitted]]) -> None:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for envelope in envelopes:
            await publish_envelope(channel, settings.topology.events_exchange, envelope)
    finally:
        await connection.close()


async def _wait_for_states(
    engine: AsyncEngine, ids: set[uuid.UUID], states: set[str], deadline_s: float = 90.0
) -> None:
    async with asyncio.timeout(deadline_s):
        while True:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text("SELECT state FROM saga.instances WHERE id = ANY(:ids)"),
                        {"ids": list(ids)},
                    )
                ).all()
            if len(rows) == len(ids) and {r.state for r in rows} <= states:
                return
            await asyncio.sleep(0.25)


async def _sagas(engine: AsyncEngine, ids: set[uuid.UUID]) -> dict[uuid.UUID, Any]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT i.id, i.state, i.definition_version, i.business_key,"
                    " array_agg(h.to_state ORDER BY h.id) AS path,"
                    " array_agg(h.message_type ORDER BY h.id) AS triggers"
                    " FROM saga.instances i JOIN saga.history h ON h.saga_id = i.id"
                    " WHERE i.id = ANY(:ids) GROUP BY i.id"
                ),
                {"ids": list(ids)},
            )
        ).all()
    return {r.id: r for r in rows}


def _wait_ready(process: Process, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not process.ready():
        assert process.popen is not None and process.popen.poll() is None, process.log_tail()
        assert time.monotonic() < deadline, f"{process.name} not ready:\n{process.log_tail()}"
        time.sleep(0.2)


def _sagaline(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it, in the new deploy's configuration."""
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url,
        "DATABASE_URL": settings.database_url,
        "SAGALINE_NAMESPACE": settings.namespace,
        **V2,
    }
    return subprocess.run(
        [sys.executable, "-m", "sagaline_tools.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_sagas_finish_under_their_version_unless_migrated(
    settings: Settings, tmp_path: Path
) -> None:
    from consumers.inventory.handlers import seed_stock

    system = System(settings)
    names = ("orchestrator", "payments", "inventory", "shipping")
    for name in names:
        args = ["-m", "orchestrator"] if name == "orchestrator" else ["-m", "consumers", name]
        system.processes.append(Process(name, args, _free_port(), tmp_path / f"{name}.log"))
    engine = create_engine(settings, pool_size=2)
    try:
        async with engine.begin() as conn:
            await seed_stock(conn, STOCK)
        for process in system.processes:
            system.start(process, SLOW_STEPS)
        system.wait_ready()
        system.stop(system.by_name("inventory"))  # reservations queue up: sagas wait there

        left_alone = [_order("a", i) for i in range(4)]
        migrated = [_order("b", i) for i in range(4)]
        await _publish(settings, left_alone + migrated)
        v1_ids = {e.correlation_id for e in left_alone + migrated}
        await _wait_for_states(engine, v1_ids, {"awaiting_inventory"})

        # Deploy version 2: the orchestrator restarts with both versions loaded.
        orchestrator = system.by_name("orchestrator")
        system.stop(orchestrator)
        system.start(orchestrator, {**SLOW_STEPS, **V2})
        _wait_ready(orchestrator)
        started_on_v2 = [_order("c", i) for i in range(3)]
        await _publish(settings, started_on_v2)
        v2_ids = {e.correlation_id for e in started_on_v2}
        await _wait_for_states(engine, v2_ids, {"reserving_stock"})

        migrate = ("saga", "migrate", "--workflow", "order", "--to", "2", "--json",
                   "--where", "key=versions-b-*",
                   "--map", "awaiting_inventory=reserving_stock")  # fmt: skip
        dry = _sagaline(settings, *migrate, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        survey = json.loads(dry.stdout)["survey"]
        assert survey["by_version"] == {"1": {"sagas": 4, "migrate": 4, "blocked": 0}}
        assert survey["moves"] == [
            {"from_version": 1, "from_state": "awaiting_inventory",
             "to_state": "reserving_stock", "sagas": 4}
        ]  # fmt: skip
        untouched = await _sagas(engine, v1_ids)
        assert {s.definition_version for s in untouched.values()} == {1}

        done = _sagaline(settings, *migrate, "--reason", "v2 deployed", "--by", "ops", "--yes")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"]["migrated"] == 4

        system.start(system.by_name("inventory"), SLOW_STEPS)
        all_ids = v1_ids | v2_ids
        states = await final_states(engine, all_ids, deadline_s=150.0, poll_s=0.25)
        async with engine.connect() as conn:
            unpublished = await _wait_outbox_drained(conn)
            ledger = await _ledger_by_order(conn)
            stock = {
                r.sku: (r.on_hand, r.reserved)
                for r in (
                    await conn.execute(text("SELECT sku, on_hand, reserved FROM inventory.stock"))
                ).all()
            }
            shipped = set(
                (
                    await conn.execute(
                        text("SELECT order_id FROM shipping.shipments WHERE status = 'created'")
                    )
                ).scalars()
            )
        sagas = await _sagas(engine, all_ids)
    finally:
        system.stop_all()
        await engine.dispose()

    expected = {"completed": 3 + 3 + 2, "failed": 3}
    assert Counter(states.values()) == Counter(expected), states
    for group, envelopes, version, packs in (
        ("left alone", left_alone, 1, False),
        ("migrated", migrated, 2, True),
        ("started on v2", started_on_v2, 2, True),
    ):
        for index, envelope in enumerate(envelopes):
            saga = sagas[envelope.correlation_id]
            outcome = "failed" if index == 0 else "completed"
            assert (saga.state, saga.definition_version) == (outcome, version), group
            if outcome == "completed":
                assert ("packing" in saga.path) is packs, (group, saga.path)
            assert ("operator:migrate" in saga.triggers) is (group == "migrated")
            charged, refunded = ledger.get(saga.business_key, (0, 0))
            net = envelope.payload.amount_cents if outcome == "completed" else 0
            assert charged - refunded == net, (group, charged, refunded)
            assert (saga.business_key in shipped) is (outcome == "completed")
    for sku, initial in STOCK.items():
        assert sum(stock[sku]) == initial, sku
    assert unpublished == 0
