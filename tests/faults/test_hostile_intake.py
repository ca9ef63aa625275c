"""Hostile headers and properties mixed into good traffic, on real processes: nothing stalls.

- The reproduction of the stall: a message whose `x-sagaline-attempt` header is 2**63-1 (any
  publisher can set it) could not be parked, and the batch path then left every message of its
  batch unacknowledged. Batches are made to wait 200 ms here so that the forged messages share
  their batches with good orders, at the orchestrator and at a worker.
- The fuzz test: hypothesis draws bodies, headers and properties; mixed into good orders, every
  drawn message is applied or parked exactly once, and every good order ends, within a deadline.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from contracts.topology import H_ATTEMPT, H_REASON, ParkReason
from sagaline.messaging.errors import PermanentMessageError
from sagaline.messaging.parsing import parse_body
from tests.faults.conftest import Scenario
from tests.faults.harness import eventually
from tests.faults.hostile import FUZZ_ID, Hostile, hostile_messages, publish_hostile

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

ORCHESTRATOR = "orchestrator"
WORKER = "payments"
INBOX = {ORCHESTRATOR: "saga.inbox", WORKER: "payments.inbox"}
BATCHING = {"SAGALINE_BATCH_WAIT_MS": "200", "SAGALINE_BATCH_SIZE": "100"}


def _forged(number: int, *, attempt: object) -> Hostile:
    return Hostile(
        body=b'{"not": "an envelope"}',
        headers={H_ATTEMPT: attempt, "x-forged": number},
        properties={"content_type": "application/json", "message_id": str(uuid.uuid4())},
        timestamp=None,
    )


async def _start(scenario: Scenario) -> None:
    h = scenario.harness
    h.base_env.update(BATCHING)
    h.add_orchestrators()
    h.add_workers()
    await h.start_all()


async def _parked_by_fuzz_id(connection: AbstractRobustConnection, queue: str) -> Counter[str]:
    """Take (and acknowledge) everything parked so far, counted by the fuzz id it carries."""
    seen: Counter[str] = Counter()
    channel = await connection.channel()
    try:
        parking = await channel.get_queue(queue)
        while (message := await parking.get(fail=False, no_ack=True)) is not None:
            seen[str((message.headers or {}).get(FUZZ_ID, "?"))] += 1
    finally:
        await channel.close()
    return seen


async def _applied(scenario: Scenario, consumer: str, messages: list[Hostile]) -> set[str]:
    """The fuzz ids of messages whose envelope's message id is in the consumer's inbox."""
    ids: dict[uuid.UUID, str] = {}
    for message in messages:
        try:
            ids[uuid.UUID(json.loads(message.body)["message_id"])] = message.fuzz_id
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    if not ids:
        return set()
    async with scenario.engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT message_id FROM {INBOX[consumer]} WHERE message_id = ANY(:ids)"),
            {"ids": list(ids)},
        )
        return {ids[row.message_id] for row in rows}


async def _outcomes(
    scenario: Scenario, consumer: str, messages: list[Hostile], within: float = 30.0
) -> tuple[Counter[str], set[str]]:
    """Wait until every message is parked or applied; then (parked copies by fuzz id, the
    fuzz ids applied), after a last look for late duplicates."""
    queue = scenario.settings.topology.parking_queue(consumer)
    parked: Counter[str] = Counter()

    async def settled() -> bool:
        parked.update(await _parked_by_fuzz_id(scenario.connection, queue))
        applied = await _applied(scenario, consumer, messages)
        return all(parked[m.fuzz_id] or m.fuzz_id in applied for m in messages)

    await eventually(settled, within=within, what=f"every message at {consumer} settled")
    await asyncio.sleep(0.5)  # a second parked copy would arrive now
    parked.update(await _parked_by_fuzz_id(scenario.connection, queue))
    return parked, await _applied(scenario, consumer, messages)


def _refusal(message: Hostile, limit: int) -> str | None:
    """Why the intake must refuse this message's body, or None when it parses."""
    try:
        # An empty property is not sent at all (aio-pika), so the consumer sees none.
        parse_body(message.body, message.properties.get("content_type") or None, limit)
    except PermanentMessageError as exc:
        return f"{exc.reason}: {exc.summary}"
    return None


async def test_forged_attempt_headers_in_batches_stall_nothing(scenario: Scenario) -> None:
    await _start(scenario)
    topology = scenario.settings.topology
    forged = {
        consumer: [
            _forged(1, attempt=9_223_372_036_854_775_807),
            _forged(2, attempt=-9_223_372_036_854_775_808),
            _forged(3, attempt="9" * 5000),
        ]
        for consumer in (ORCHESTRATOR, WORKER)
    }
    orders = scenario.workload.make(30)
    channel = await scenario.connection.channel(publisher_confirms=True)
    async with scenario.shop() as shop:
        await shop.send(orders[:15])
        for consumer, messages in forged.items():
            for message in messages:
                assert await publish_hostile(channel, topology.work_queue(consumer), message)
        await shop.send(orders[15:])
    await channel.close()

    await scenario.wait_for_end(within=60)
    for consumer, messages in forged.items():
        parked, _ = await _outcomes(scenario, consumer, messages)
        assert parked == Counter({m.fuzz_id: 1 for m in messages})
    scenario.report.notes.append("forged attempt headers parked; every order ended")


@st.composite
def _mix(draw: st.DrawFn) -> dict[str, list[Hostile]]:
    return {
        ORCHESTRATOR: draw(st.lists(hostile_messages(), min_size=10, max_size=20)),
        WORKER: draw(st.lists(hostile_messages(for_worker=True), min_size=5, max_size=10)),
    }


@hypothesis_settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    # Each example runs real processes for seconds: no shrinking, the failing mix is printed.
    phases=[Phase.explicit, Phase.generate],
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mix=_mix())
async def test_any_hostile_message_is_applied_or_parked_exactly_once(
    scenario: Scenario, mix: dict[str, list[Hostile]]
) -> None:
    # Processes are started once and serve every example (hypothesis reuses the fixture).
    if not scenario.harness.names:
        await _start(scenario)
    topology = scenario.settings.topology
    orders = scenario.workload.make(8)
    channel: AbstractChannel = await scenario.connection.channel(publisher_confirms=True)
    sent: dict[str, list[Hostile]] = {}
    async with scenario.shop() as shop:
        await shop.send(orders[:4])
        for consumer, messages in mix.items():
            for message in messages:
                if channel.is_closed:
                    channel = await scenario.connection.channel(publisher_confirms=True)
                if await publish_hostile(channel, topology.work_queue(consumer), message):
                    sent.setdefault(consumer, []).append(message)
        await shop.send(orders[4:])
    await channel.close()

    await scenario.wait_for_end(within=60)
    limit = scenario.settings.max_body_bytes
    for consumer, messages in sent.items():
        parked, applied = await _outcomes(scenario, consumer, messages)
        for message in messages:
            outcome = (parked[message.fuzz_id], message.fuzz_id in applied)
            # The orchestrator's inbox row is written only with a committed step and a worker's
            # only with its effect, so applied and parked exclude each other.
            assert outcome in ((1, False), (0, True)), (consumer, message, outcome)
            if outcome == (0, True):
                assert _refusal(message, limit) is None, (consumer, _refusal(message, limit))
    assert all(scenario.harness.alive(name) for name in scenario.harness.names)


async def test_parked_reason_is_ours_not_the_senders(scenario: Scenario) -> None:
    """A forged `x-sagaline-reason` on a bad message is replaced by the real reason."""
    await _start(scenario)
    topology = scenario.settings.topology
    message = Hostile(
        body=b"{not json",
        headers={H_REASON: "retries-exhausted"},
        properties={"content_type": "application/json"},
        timestamp=None,
    )
    channel = await scenario.connection.channel(publisher_confirms=True)
    assert await publish_hostile(channel, topology.work_queue(ORCHESTRATOR), message)
    await channel.close()

    async def parked() -> list[aio_pika.abc.AbstractIncomingMessage] | None:
        channel = await scenario.connection.channel()
        try:
            queue = await channel.get_queue(topology.parking_queue(ORCHESTRATOR))
            found = await queue.get(fail=False, no_ack=True)
        finally:
            await channel.close()
        return [found] if found is not None else None

    (found,) = await eventually(parked, within=20, what="the bad message parked")
    assert (found.headers or {}).get(H_REASON) == ParkReason.MALFORMED_JSON.value
