"""Workflow versions in the store: every saga records its version, and old versions keep running.

Version 2 of the order workflow is a real changed definition (tests/order_v2.py: a renamed
state and an added step); "deploying" it is building the store with version 1 and 2 loaded.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from orchestrator.engine.registry import UnknownDefinition, Workflows
from orchestrator.metrics import DatabaseSampler, SagaMetrics
from orchestrator.store.plan import REFUSED_TIMER_DELAY
from orchestrator.store.tables import inbox, timers
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_engine
from sagaline.settings import Settings
from tests import order_v2
from tests.conftest import own_database
from tests.integration.support import FakeClock, reply
from tests.integration.versions_support import (
    awaited,
    moves,
    pay,
    reserve,
    saga_row,
    ship,
    start,
    store_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_every_saga_records_the_version_it_started_under(
    engine: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock()
    before = await start(store_of(engine, settings, WORKFLOWS, clock))
    after = await start(store_of(engine, settings, order_v2.WORKFLOWS, clock))

    assert (await saga_row(engine, before)).definition_version == 1
    assert (await saga_row(engine, after)).definition_version == 2


async def test_a_saga_started_under_v1_finishes_under_v1_after_v2_is_deployed(
    engine: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock()
    v1_store = store_of(engine, settings, WORKFLOWS, clock)
    old = await start(v1_store)
    await pay(v1_store, engine, old)
    assert (await saga_row(engine, old)).state == "awaiting_inventory"

    deployed = store_of(engine, settings, order_v2.WORKFLOWS, clock)
    new = await start(deployed)
    await reserve(deployed, engine, old)
    await pay(deployed, engine, new)
    await reserve(deployed, engine, new)
    # Version 2's added step waits for its timer; version 1 went straight on to shipping.
    assert (await saga_row(engine, old)).state == "awaiting_shipment"
    assert (await saga_row(engine, new)).state == "packing"
    clock.advance(order_v2.PACKING_TIME)
    await deployed.fire_due_timers(100)
    await ship(deployed, engine, old)
    await ship(deployed, engine, new)

    for saga_id in (old, new):
        assert (await saga_row(engine, saga_id)).state == "completed"
    assert (await saga_row(engine, old)).definition_version == 1
    assert await moves(engine, old) == [
        "awaiting_payment",
        "awaiting_payment->awaiting_inventory",
        "awaiting_inventory->awaiting_shipment",
        "awaiting_shipment->completed",
    ]
    assert await moves(engine, new) == [
        "awaiting_payment",
        "awaiting_payment->reserving_stock",
        "reserving_stock->packing",
        "packing->awaiting_shipment",
        "awaiting_shipment->completed",
    ]


async def test_a_v1_timer_fires_under_v1_after_v2_is_deployed(
    engine: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock()
    old = await start(store_of(engine, settings, WORKFLOWS, clock))
    deployed = store_of(engine, settings, order_v2.WORKFLOWS, clock)
    clock.advance(settings.step_timeout + timedelta(seconds=1))

    await deployed.fire_due_timers(1000)

    row = await saga_row(engine, old)
    assert (row.state, row.definition_version) == ("compensating", 1)
    assert row.runtime["reason"] == "step timed out"


async def test_a_saga_of_a_version_no_longer_loaded_is_refused_and_can_be_retried(
    engine: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock()
    old = await start(store_of(engine, settings, WORKFLOWS, clock))
    only_v2 = store_of(engine, settings, Workflows.of(order_v2.machine), clock)
    command = await awaited(engine, old)
    paid = reply(
        o.PaymentProcessed(order_id=f"order-{old}", payment_id="p-1", amount_cents=1000),
        old,
        command,
    )

    with pytest.raises(UnknownDefinition, match=r"order v1, which this process does not load"):
        await only_v2.handle(paid)

    assert (await saga_row(engine, old)).state == "awaiting_payment"
    async with engine.connect() as conn:
        remembered = await conn.scalar(
            select(func.count()).select_from(inbox).where(inbox.c.message_id == paid.message_id)
        )
    assert remembered == 0  # refused messages leave no trace: the replay after a fix applies
    await store_of(engine, settings, order_v2.WORKFLOWS, clock).handle(paid)
    assert (await saga_row(engine, old)).state == "awaiting_inventory"


async def test_a_timer_of_a_version_no_longer_loaded_is_kept_for_later(
    engine: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock()
    old = await start(store_of(engine, settings, WORKFLOWS, clock))
    only_v2 = store_of(engine, settings, Workflows.of(order_v2.machine), clock)
    clock.advance(settings.step_timeout + timedelta(seconds=1))

    assert await only_v2.fire_due_timers(1000) == []
    async with engine.connect() as conn:
        due = await conn.scalar(select(timers.c.due_at).where(timers.c.saga_id == old))
    assert due == clock.now + REFUSED_TIMER_DELAY  # put back, not lost
    assert (await saga_row(engine, old)).state == "awaiting_payment"

    clock.advance(REFUSED_TIMER_DELAY)  # version 1 is deployed again
    await store_of(engine, settings, order_v2.WORKFLOWS, clock).fire_due_timers(1000)
    row = await saga_row(engine, old)
    assert (row.state, row.runtime["reason"]) == ("compensating", "step timed out")


def test_loading_the_same_version_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="order v2 is given twice"):
        Workflows.of(order_v2.machine, order_v2.build())


def test_new_sagas_start_under_the_newest_version() -> None:
    assert order_v2.WORKFLOWS["order"].version == 2
    assert order_v2.WORKFLOWS.for_event("OrderSubmitted") is order_v2.machine


async def test_the_metrics_count_running_sagas_per_version(
    engine: AsyncEngine, settings: Settings
) -> None:
    async with own_database(settings) as own:
        own_engine = create_engine(own, pool_size=1)
        try:
            clock = FakeClock()
            for workflows in (WORKFLOWS, WORKFLOWS, order_v2.WORKFLOWS):
                await start(store_of(own_engine, own, workflows, clock))
            metrics = SagaMetrics(CollectorRegistry())
            await DatabaseSampler(own_engine, metrics).sample()
        finally:
            await own_engine.dispose()

    def running(version: str) -> float:
        return metrics.active_by_version.labels("order", version)._value.get()

    assert (running("1"), running("2")) == (2, 1)
    # The per-state gauge still counts every version's sagas together.
    assert metrics.active.labels("order", "awaiting_payment")._value.get() == 3
