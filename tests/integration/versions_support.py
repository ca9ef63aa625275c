"""Helpers for the workflow-version tests: drive order sagas step by step through a store."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from orchestrator.engine import Incoming
from orchestrator.engine.registry import Workflows
from orchestrator.store.saga_store import SagaStore
from orchestrator.store.tables import history, instances
from sagaline.settings import Settings
from tests.integration.support import FakeClock, order_submitted, reply


def store_of(
    engine: AsyncEngine, settings: Settings, workflows: Workflows, clock: FakeClock
) -> SagaStore:
    """A store as the composition root wires it, with the workflows of one deploy."""
    from orchestrator.app import build_store

    return build_store(settings, engine, clock=clock, workflows=workflows)


async def saga_row(engine: AsyncEngine, saga_id: uuid.UUID) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(instances).where(instances.c.id == saga_id))).one()


async def moves(engine: AsyncEngine, saga_id: uuid.UUID) -> list[str]:
    """The saga's history as `from->to` (or the state alone when it stayed)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(history.c.from_state, history.c.to_state)
                .where(history.c.saga_id == saga_id)
                .order_by(history.c.id)
            )
        ).all()
    return [f"{r.from_state}->{r.to_state}" if r.from_state else r.to_state for r in rows]


async def awaited(engine: AsyncEngine, saga_id: uuid.UUID) -> uuid.UUID:
    """The one command the saga waits for."""
    (command_id,) = (await saga_row(engine, saga_id)).runtime["outstanding"]
    return uuid.UUID(command_id)


async def start(store: SagaStore, saga_id: uuid.UUID | None = None) -> uuid.UUID:
    submitted = order_submitted(saga_id)
    await store.handle(Incoming.from_envelope(submitted))
    return submitted.correlation_id


async def pay(store: SagaStore, engine: AsyncEngine, saga_id: uuid.UUID) -> None:
    payload = o.PaymentProcessed(order_id=f"order-{saga_id}", payment_id="p-1", amount_cents=1000)
    await store.handle(reply(payload, saga_id, await awaited(engine, saga_id)))


async def reserve(store: SagaStore, engine: AsyncEngine, saga_id: uuid.UUID) -> None:
    payload = o.InventoryReserved(order_id=f"order-{saga_id}")
    await store.handle(reply(payload, saga_id, await awaited(engine, saga_id)))


async def ship(store: SagaStore, engine: AsyncEngine, saga_id: uuid.UUID) -> None:
    payload = o.OrderShipped(order_id=f"order-{saga_id}", tracking_number="TRK-1")
    await store.handle(reply(payload, saga_id, await awaited(engine, saga_id)))
