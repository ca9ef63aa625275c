"""Parking queues through `sagaline dlq`, on the real broker with the real orchestrator and
workers: messages parked for several reasons are counted, shown without loss, replayed
(dry run first) and, once the fault is fixed, the saga completes exactly once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from contracts.behaviour import CONTENT_TYPE
from contracts.envelope import new_envelope
from contracts.topology import H_ORIGINAL_QUEUE, H_REASON, ORCHESTRATOR
from sagaline.messaging.declare import declare_consumer
from sagaline.messaging.publish import publish_envelope
from sagaline.settings import Settings
from tests.integration.test_admin import (
    Stack,
    charges,
    cli,
    cli_json,
    db,
    failing,
    history_of,
    ops_settings,
    saga_state,
    stack,
    submit,
    wait_parked,
    wait_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Module-scoped and per-test fixtures shared with test_admin (its own database, a fresh
# namespace per test).
__all__ = ["db", "ops_settings", "stack"]


async def poison(settings: Settings) -> list[str]:
    """Three messages the orchestrator can never process; returns their message ids."""
    ids = [str(uuid.uuid4()) for _ in range(3)]
    work_queue = settings.topology.work_queue(ORCHESTRATOR)
    unknown_type = (
        b'{"message_id": "%s", "correlation_id": "%s", "type": "NoSuchEvent",'
        b' "occurred_at": "2026-01-01T00:00:00Z", "payload": {}}'
        % (ids[1].encode(), str(uuid.uuid4()).encode())
    )
    # A reply for a saga that does not exist: it parses, but no saga can take it.
    orphan = new_envelope(
        o.PaymentFailed(order_id="nobody", reason="x"),
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        message_id=uuid.UUID(ids[2]),
    )
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for message_id, body in ((ids[0], b"{not json"), (ids[1], unknown_type)):
            await channel.default_exchange.publish(
                aio_pika.Message(body, content_type=CONTENT_TYPE, message_id=message_id),
                routing_key=work_queue,
            )
        await publish_envelope(channel, settings.topology.events_exchange, orphan)
    finally:
        await connection.close()
    return ids


async def queue_depth(settings: Settings, consumer: str) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.topology.parking_queue(consumer), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def wait_replayed_and_parked(settings: Settings, times: int, within: float = 20.0) -> dict:  # type: ignore[type-arg]
    async with asyncio.timeout(within):
        while True:
            shown = await cli_json(settings, "dlq", "show", "payments")
            if shown["messages"] and shown["messages"][0]["replays"] == times:
                return shown  # type: ignore[no-any-return]
            await asyncio.sleep(0.2)


async def test_park_inspect_replay_and_complete_exactly_once(stack: Stack, db: AsyncEngine) -> None:
    settings = stack.settings
    topology = settings.topology
    await stack.start("orchestrator")
    await stack.start("payments", failing("ProcessPayment"))
    await stack.start("inventory")
    await stack.start("shipping")
    saga_id = await submit(settings)
    poisoned = await poison(settings)
    await wait_parked(settings, ORCHESTRATOR, 3)
    await wait_parked(settings, "payments", 1)  # after the whole retry ladder

    listing = await cli_json(settings, "dlq", "list")
    queues = {q["queue"]: q for q in listing["queues"]}
    assert queues[topology.parking_queue(ORCHESTRATOR)]["reasons"] == {
        "malformed-json": 1,
        "unknown-saga": 1,
        "unknown-type": 1,
    }
    assert queues[topology.parking_queue("payments")]["reasons"] == {"retries-exhausted": 1}
    assert listing["total"] == 4

    # Looking takes nothing: the same messages, in the same order, and the same depth.
    first = await cli_json(settings, "dlq", "show", "orchestrator")
    second = await cli_json(settings, "dlq", "show", "orchestrator")
    assert first == second
    assert sorted(m["message_id"] for m in first["messages"]) == sorted(poisoned)
    assert [m["position"] for m in first["messages"]] == [0, 1, 2]
    assert first["depth"] == 3 == await queue_depth(settings, ORCHESTRATOR)
    human = await cli(settings, "dlq", "show", "orchestrator")
    assert human.exit_code == 0 and poisoned[0] in human.stdout

    (parked,) = (await cli_json(settings, "dlq", "show", "payments"))["messages"]
    assert (parked["message_type"], parked["correlation_id"]) == ("ProcessPayment", str(saga_id))
    assert (parked["attempts"], parked["replays"]) == (3, 0)
    assert parked["error"].startswith("InjectedFault: injected failure for ProcessPayment")
    assert parked["original_queue"] == topology.work_queue("payments")

    dry = await cli_json(settings, "dlq", "replay", "payments", "--all", "--dry-run")
    assert (dry["dry_run"], dry["count"]) == (True, 1)
    await asyncio.sleep(0.5)
    assert await queue_depth(settings, "payments") == 1
    assert await saga_state(db, saga_id) == "awaiting_payment"
    assert await charges(db, saga_id) == 0

    # Replayed before the fix: it fails again and is parked again, once, with replays = 1.
    replayed = await cli_json(settings, "dlq", "replay", "payments", "--id", parked["message_id"])
    assert replayed["count"] == 1
    again = await wait_replayed_and_parked(settings, times=1)
    (reparked,) = again["messages"]
    assert (reparked["message_id"], reparked["attempts"]) == (parked["message_id"], 3)
    assert reparked["first_failed_at"] == parked["first_failed_at"]
    await asyncio.sleep(1.5)  # longer than the whole retry ladder: no loop
    (still,) = (await cli_json(settings, "dlq", "show", "payments"))["messages"]
    assert (still["replays"], still["attempts"]) == (1, 3)

    # The fix is deployed: the replay completes the saga, and every step happened once.
    await stack.restart("payments")
    fixed = await cli_json(settings, "dlq", "replay", "payments", "--reason", "retries-exhausted")
    assert fixed["count"] == 1
    await wait_state(db, saga_id, "completed")
    assert await charges(db, saga_id) == 1
    entries = await history_of(db, saga_id)
    assert [(e.message_type, e.outcome) for e in entries] == [
        ("OrderSubmitted", "started"),
        ("PaymentProcessed", "transitioned"),
        ("InventoryReserved", "transitioned"),
        ("OrderShipped", "transitioned"),
    ]
    assert await queue_depth(settings, "payments") == 0
    # The poison stays parked: replaying it cannot help, so nothing replays it automatically.
    assert await queue_depth(settings, ORCHESTRATOR) == 3


async def test_purge_removes_only_what_was_chosen(stack: Stack) -> None:
    settings = stack.settings
    await stack.start("orchestrator")
    poisoned = await poison(settings)
    await wait_parked(settings, ORCHESTRATOR, 3)
    order = [
        m["message_id"]
        for m in (await cli_json(settings, "dlq", "show", "orchestrator"))["messages"]
    ]
    assert sorted(order) == sorted(poisoned)

    refused = await cli(settings, "dlq", "purge", "orchestrator", "--all")
    assert refused.exit_code == 2
    assert "pass --yes" in refused.stderr
    assert await queue_depth(settings, ORCHESTRATOR) == 3

    purged = await cli_json(settings, "dlq", "purge", "orchestrator", "--id", order[1], "--yes")
    assert (purged["count"], purged["not_found"]) == (1, [])
    left = (await cli_json(settings, "dlq", "show", "orchestrator"))["messages"]
    assert [m["message_id"] for m in left] == [order[0], order[2]]

    everything = await cli_json(settings, "dlq", "purge", "orchestrator", "--all", "--yes")
    assert everything["count"] == 2
    assert await queue_depth(settings, ORCHESTRATOR) == 0
    missing = await cli(settings, "dlq", "replay", "orchestrator", "--id", order[0])
    assert missing.exit_code == 1
    assert f"not parked in {settings.topology.parking_queue(ORCHESTRATOR)}" in missing.stderr


async def test_envelope_ids_and_the_broker_reason_of_a_rejected_message(stack: Stack) -> None:
    """A publisher that sets the ids only in the envelope and forges our parking headers; the
    broker dead-letters the message on a reject. `dlq show` reads the ids from the envelope and
    the reason and origin from the broker's x-death, not from the forged headers."""
    settings = stack.settings
    topology = settings.topology
    ids = {"message_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}
    body = json.dumps(ids | {"type": "OrderSubmitted", "payload": {}}).encode()
    forged: dict[str, Any] = {H_REASON: "retries-exhausted", H_ORIGINAL_QUEUE: "somewhere.else"}
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        work = await declare_consumer(channel, topology, "payments", [])
        await channel.default_exchange.publish(
            aio_pika.Message(body, content_type=CONTENT_TYPE, headers=forged),
            routing_key=work.name,
        )
        async with asyncio.timeout(10):
            taken = await work.get(no_ack=False)
        await taken.reject(requeue=False)
    finally:
        await connection.close()
    await wait_parked(settings, "payments", 1)

    (parked,) = (await cli_json(settings, "dlq", "show", "payments"))["messages"]
    assert (parked["correlation_id"], parked["message_type"]) == (
        ids["correlation_id"],
        "OrderSubmitted",
    )
    # aiormq gives every message it publishes a random message id property, and a property
    # wins over the envelope (the unit tests cover a publisher that sets none).
    assert parked["message_id"] == taken.message_id != ids["message_id"]
    assert (parked["reason"], parked["original_queue"]) == ("rejected", work.name)
    listing = await cli_json(settings, "dlq", "list")
    (payments,) = [q for q in listing["queues"] if q["queue"] == topology.parking_queue("payments")]
    assert payments["reasons"] == {"rejected": 1}
