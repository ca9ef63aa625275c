"""Waiting for sagas to finish, and what a test that waited in vain shows about them: enough to
tell a lost command (an unpublished outbox row), a lost reply (a command published and no answer
in the history) and a saga never started (no row at all) apart, without re-running anything."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import aio_pika
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sagaline.settings import Settings

MAX_SAGAS_SHOWN = 5


async def final_states(
    engine: AsyncEngine, saga_ids: set[uuid.UUID], deadline_s: float, poll_s: float = 0.2
) -> dict[uuid.UUID, str]:
    """Each saga's final state once all have finished; an AssertionError describing the
    unfinished ones after `deadline_s`."""
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                async with engine.connect() as conn:
                    rows = (
                        await conn.execute(
                            text(
                                "SELECT id, state, finished_at IS NOT NULL AS done"
                                " FROM saga.instances WHERE id = ANY(:ids)"
                            ),
                            {"ids": list(saga_ids)},
                        )
                    ).all()
                if len(rows) == len(saga_ids) and all(row.done for row in rows):
                    return {row.id: row.state for row in rows}
                await asyncio.sleep(poll_s)
    except TimeoutError:
        report = await describe_unfinished(engine, saga_ids)
        raise AssertionError(f"sagas unfinished after {deadline_s:.0f} s:\n{report}") from None


async def describe_unfinished(engine: AsyncEngine, saga_ids: set[uuid.UUID]) -> str:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id, state, version, updated_at FROM saga.instances"
                    " WHERE id = ANY(:ids) AND finished_at IS NULL ORDER BY updated_at"
                ),
                {"ids": list(saga_ids)},
            )
        ).all()
        found = await conn.scalar(
            text("SELECT count(*) FROM saga.instances WHERE id = ANY(:ids)"),
            {"ids": list(saga_ids)},
        )
        lines = [f"{len(saga_ids)} sagas awaited: {found} exist, {len(rows)} of them unfinished"]
        lines.extend(await _outbox(conn, "published_at IS NULL", {}))
        for row in rows[:MAX_SAGAS_SHOWN]:
            lines.append(f"saga {row.id}: {row.state} (version {row.version}, {row.updated_at})")
            lines.extend(f"  {line}" for line in await _history(conn, row.id))
            lines.extend(
                f"  {line}" for line in await _outbox(conn, "saga_id = :id", {"id": row.id})
            )
    return "\n".join(lines)


async def _history(conn: AsyncConnection, saga_id: uuid.UUID) -> list[str]:
    rows = (
        await conn.execute(
            text(
                "SELECT version, at, message_type, outcome, from_state, to_state, commands, actor"
                " FROM saga.history WHERE saga_id = :id ORDER BY id"
            ),
            {"id": saga_id},
        )
    ).all()
    return [
        f"v{r.version} {r.at:%H:%M:%S.%f} {r.message_type} by {r.actor}: {r.outcome}"
        f" {r.from_state} -> {r.to_state}, commands {r.commands}"
        for r in rows
    ]


async def _outbox(conn: AsyncConnection, where: str, values: dict[str, object]) -> list[str]:
    rows = (
        await conn.execute(
            text(
                "SELECT saga_id, message_type, message_id, published_at, dispatch_until"
                f" FROM saga.outbox WHERE {where} ORDER BY id LIMIT 10"
            ),
            values,
        )
    ).all()
    return [
        f"outbox {r.message_type} {r.message_id} of saga {r.saga_id}: published"
        f" {r.published_at}, leased until {r.dispatch_until}"
        for r in rows
    ]


async def queue_depths(settings: Settings, consumers: Sequence[str]) -> list[str]:
    """Ready messages and consumers of each consumer's work and parking queue: an event nobody
    took waits in a work queue, one refused waits in parking with its reason."""
    lines = []
    connection = await aio_pika.connect(settings.amqp_url, timeout=5)
    try:
        for consumer in consumers:
            topology = settings.topology
            for queue in (topology.work_queue(consumer), topology.parking_queue(consumer)):
                channel = await connection.channel()  # a missing queue closes its channel
                try:
                    declared = (await channel.declare_queue(queue, passive=True)).declaration_result
                    lines.append(
                        f"{queue}: {declared.message_count} ready,"
                        f" {declared.consumer_count} consumers"
                    )
                except aio_pika.exceptions.ChannelClosed:
                    lines.append(f"{queue}: missing")
    finally:
        await connection.close()
    return lines
