"""Scenario 8 and the log hygiene check: poison and hostile input mixed into good traffic.

Malformed JSON, non-UTF-8 bytes, a wrong content type, schema-invalid fields, an unknown type,
a missing and an invalid correlation id, an oversized body (refused before parsing), deeply
nested JSON, a newer schema version, a reply for an unknown saga, and misrouted or invalid
commands at a worker, interleaved with good orders. Each is parked once with the right reason,
every good order completes, and no process restarts (same pid, never exited).

Every good payload and every poison body carries a distinctive secret; no process log line
(processes run at DEBUG, the most talkative level) and no parked message's error header may
contain it: logs carry ids, types and reasons only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, DeliveryMode
from sqlalchemy import text

from contracts import order as o
from contracts.base import Command
from contracts.envelope import new_envelope
from contracts.topology import H_ERROR, ParkReason
from sagaline.messaging.parking import ParkingQueues
from tests.faults.checker import CONSUMERS, queue_depth
from tests.faults.conftest import Scenario
from tests.faults.harness import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

SECRET = f"S3CR3T{uuid.uuid4().hex[:12]}"
MAX_BODY = 64 * 1024
JSON = "application/json"


@dataclass(frozen=True)
class Poison:
    name: str
    consumer: str
    reason: ParkReason
    body: bytes
    content_type: str | None = JSON


def _order_envelope(**changes: Any) -> dict[str, Any]:
    saga_id = uuid.uuid4()
    envelope: dict[str, Any] = json.loads(
        new_envelope(
            o.OrderSubmitted(
                order_id=f"poison-{saga_id.hex[:8]}",
                customer_id=SECRET,
                amount_cents=1_000,
                currency="EUR",
                card_token="tok_ok",
                lines=(o.OrderLine(sku=SECRET, quantity=1),),
                ship_to=o.Address(country="DE", postcode=SECRET, city="Berlin"),
            ),
            correlation_id=saga_id,
        ).to_json()
    )
    envelope.update(changes)
    return envelope


def _payload(**changes: Any) -> dict[str, Any]:
    envelope = _order_envelope()
    envelope["payload"].update(changes)
    return envelope


def _without(key: str) -> dict[str, Any]:
    envelope = _order_envelope()
    del envelope[key]
    return envelope


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def _command(payload: Command) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(
        new_envelope(payload, correlation_id=uuid.uuid4()).to_json()
    )
    return envelope


ORCH = "orchestrator"
NESTING = 20_000


def poisons() -> list[Poison]:
    secret = SECRET.encode()
    unknown_saga_reply = new_envelope(
        o.PaymentProcessed(order_id=SECRET, payment_id=SECRET, amount_cents=1),
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
    )
    misrouted = o.ReserveInventory(order_id=SECRET, lines=(o.OrderLine(sku=SECRET, quantity=1),))
    invalid_refund = _command(o.RefundPayment(order_id="x"))
    invalid_refund["payload"] = {"order_id": SECRET, "amount": -1}
    m = ParkReason
    return [
        Poison("malformed json", ORCH, m.MALFORMED_JSON, b'{"customer": "' + secret),
        Poison("non-utf-8", ORCH, m.MALFORMED_JSON, b'{"type": "\xff\xfe' + secret + b'"}'),
        Poison(
            "wrong content type",
            ORCH,
            m.WRONG_CONTENT_TYPE,
            _encode(_order_envelope()),
            "text/plain",
        ),
        Poison(
            "schema-invalid value",
            ORCH,
            m.SCHEMA_INVALID,
            _encode(_payload(amount_cents=SECRET)),
        ),
        Poison(
            "schema-invalid extra field",
            ORCH,
            m.SCHEMA_INVALID,
            _encode(_payload(**{SECRET: 1})),
        ),
        Poison(
            "unknown type",
            ORCH,
            m.UNKNOWN_TYPE,
            _encode(_order_envelope(type="OrderTeleported")),
        ),
        Poison(
            "missing correlation id",
            ORCH,
            m.INVALID_ENVELOPE,
            _encode(_without("correlation_id")),
        ),
        Poison(
            "invalid correlation id",
            ORCH,
            m.INVALID_ENVELOPE,
            _encode(_order_envelope(correlation_id=SECRET)),
        ),
        Poison(
            "oversized (and not JSON: the size is checked first)",
            ORCH,
            m.OVERSIZED,
            b"{" + secret * (MAX_BODY // len(secret) + 10),
        ),
        Poison(
            "deeply nested",
            ORCH,
            m.MALFORMED_JSON,
            b'{"payload": ' + b"[" * NESTING + secret + b"]" * NESTING + b"}",
        ),
        Poison(
            "newer schema version",
            ORCH,
            m.UNSUPPORTED_SCHEMA_VERSION,
            _encode(_order_envelope(schema_version=2)),
        ),
        Poison("reply for an unknown saga", ORCH, m.UNKNOWN_SAGA, unknown_saga_reply.to_json()),
        Poison("malformed json at a worker", "payments", m.MALFORMED_JSON, b"[" + secret),
        Poison("misrouted command", "payments", m.UNEXPECTED_TYPE, _encode(_command(misrouted))),
        Poison("invalid command", "payments", m.SCHEMA_INVALID, _encode(invalid_refund)),
    ]


async def _publish_poison(channel: AbstractChannel, scenario: Scenario, poison: Poison) -> str:
    """Straight into the consumer's work queue, as a misbehaving publisher would route it."""
    message_id = str(uuid.uuid4())
    await channel.default_exchange.publish(
        aio_pika.Message(
            body=poison.body,
            content_type=poison.content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message_id,
            type="poison",
        ),
        routing_key=scenario.settings.topology.work_queue(poison.consumer),
        mandatory=True,
    )
    return message_id


async def test_poison_is_parked_once_with_its_reason_and_logs_never_show_payloads(
    scenario: Scenario,
) -> None:
    h = scenario.harness
    h.base_env["SAGALINE_MAX_BODY_BYTES"] = str(MAX_BODY)
    # The most talkative level: DEBUG once leaked raw AMQP frames (aiormq) into the logs.
    h.base_env["SAGALINE_LOG_LEVEL"] = "DEBUG"
    h.add_orchestrators()
    h.add_workers()
    await h.start_all()
    pids = {name: h.pid(name) for name in h.names}
    scenario.workload.secret = SECRET
    expected: dict[str, dict[str, str]] = {}
    poisons_ = poisons()
    orders = scenario.workload.make(2 * len(poisons_))
    channel = await scenario.connection.channel(publisher_confirms=True)
    async with scenario.shop() as shop:
        for i, order in enumerate(orders):
            await shop.send([order])
            if i % 2:
                poison = poisons_[i // 2]
                message_id = await _publish_poison(channel, scenario, poison)
                expected.setdefault(poison.consumer, {})[message_id] = poison.reason.value
    await channel.close()

    topology = scenario.settings.topology

    async def all_parked() -> bool:
        for consumer, wanted in expected.items():
            depth = await queue_depth(scenario.connection, topology.parking_queue(consumer))
            if (depth or 0) < len(wanted):
                return False
        return True

    await eventually(all_parked, within=60, what="every poison message to be parked")
    await scenario.wait_for_end()
    for name, pid in pids.items():
        assert h.alive(name) and h.pid(name) == pid, f"{name} restarted or exited"

    parking = ParkingQueues(scenario.connection, topology, CONSUMERS)
    for consumer in expected:
        for parked in await parking.peek(topology.parking_queue(consumer), 1000):
            assert SECRET not in (parked.error or ""), f"{H_ERROR} quotes the payload: {parked}"
    await scenario.verify(expected_parked=expected)

    leaks = {
        name: [line for line in log.splitlines() if SECRET.encode() in line][:3]
        for name, log in h.log_bytes().items()
    }
    assert not any(leaks.values()), f"payload values in logs: {leaks}"
    assert sum(len(b) for b in h.log_bytes().values()) > 0
    scenario.report.notes.append(f"poison kinds={len(poisons_)}; secret absent from logs")


async def test_an_outbox_row_for_a_missing_exchange_does_not_block_the_relay(
    scenario: Scenario,
) -> None:
    h = scenario.harness
    h.add_orchestrators()
    h.add_workers()
    gone = uuid.uuid4()
    # Rows only the relay loop publishes (the orchestrator publishes its own steps' commands
    # itself): one for an exchange that does not exist, then events claimed in the same round.
    relayed = [uuid.uuid4() for _ in range(5)]
    rows = [(gone, f"{scenario.settings.namespace}.gone")]
    rows += [(message_id, scenario.settings.topology.events_exchange) for message_id in relayed]
    async with scenario.engine.begin() as conn:
        for message_id, exchange in rows:
            await conn.execute(
                text(
                    "INSERT INTO saga.outbox (message_id, saga_id, exchange, routing_key,"
                    " message_type, body, headers, created_at) VALUES (:id, :saga, :exchange,"
                    " 'OrderCompleted', 'OrderCompleted', :body, '{}', now())"
                ),
                {"id": message_id, "saga": uuid.uuid4(), "exchange": exchange, "body": b"{}"},
            )
    await h.start_all()
    orders = scenario.workload.make(10)
    async with scenario.shop() as shop:
        await shop.send(orders)
    # The row for the missing exchange is held (the relay reports it) while every order runs
    # and the relay publishes the rows behind it.
    await scenario.wait_for_end(within=20)

    async def published() -> dict[uuid.UUID, bool] | None:
        async with scenario.engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT message_id, published_at IS NOT NULL FROM saga.outbox"
                    " WHERE message_id = ANY(:ids)"
                ),
                {"ids": [gone, *relayed]},
            )
            state = {message_id: sent for message_id, sent in result}
        return state if all(state.get(m) for m in relayed) else None

    state = await eventually(published, within=20, what="the relay to publish the rows behind")
    assert state[gone] is False
