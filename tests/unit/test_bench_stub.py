"""sagaline bench: the stub worker answers like a real worker, and the relay batches."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.inbox import reply_message_id
from contracts import order
from contracts.base import ReplyEvent
from contracts.envelope import envelope_model, new_envelope
from contracts.registry import message_class
from contracts.routes import WORKER_COMMANDS
from sagaline_tools.bench.baseline import BODY_BYTES, relay_body
from sagaline_tools.bench.relay import next_batch
from sagaline_tools.bench.stub_worker import REPLIES, STUB_QUEUES, build_reply
from sagaline_tools.bench.workload import order_id, stock_for, submitted

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
LINES = (order.OrderLine(sku="sku-1", quantity=2),)
ADDRESS = order.Address(country="DE", postcode="10115", city="Berlin")

COMMANDS = [
    order.ProcessPayment(
        order_id="o-1", customer_id="c-1", amount_cents=1250, currency="EUR", card_token="tok"
    ),
    order.RefundPayment(order_id="o-1"),
    order.ReserveInventory(order_id="o-1", lines=LINES),
    order.ReleaseInventory(order_id="o-1"),
    order.CreateShipment(order_id="o-1", ship_to=ADDRESS, lines=LINES),
    order.CancelShipment(order_id="o-1"),
]
SUCCESS: dict[str, type[ReplyEvent]] = {
    "ProcessPayment": order.PaymentProcessed,
    "RefundPayment": order.PaymentRefunded,
    "ReserveInventory": order.InventoryReserved,
    "ReleaseInventory": order.InventoryReleased,
    "CreateShipment": order.OrderShipped,
    "CancelShipment": order.ShipmentCancelled,
}


def test_every_order_worker_command_has_a_success_reply() -> None:
    commands = {c.message_type for w in STUB_QUEUES for c in WORKER_COMMANDS[w]}
    assert commands == set(REPLIES)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_replies_are_valid_envelopes_tied_to_their_command(command: Any) -> None:
    envelope = new_envelope(command, correlation_id=uuid.uuid4(), causation_id=uuid.uuid4())
    built = build_reply(envelope.to_json(), NOW)
    assert built is not None
    reply_type, body, ids = built
    reply_class = SUCCESS[envelope.type]
    assert reply_type == reply_class.message_type
    # What the orchestrator does with a reply: parse it strictly against the contracts.
    assert message_class(reply_type) is reply_class
    assert issubclass(reply_class, ReplyEvent)
    reply = envelope_model(reply_class).model_validate_json(body)
    assert reply.type == reply_type
    assert reply.correlation_id == envelope.correlation_id
    assert reply.causation_id == envelope.message_id
    assert reply.message_id == reply_message_id(envelope.message_id)
    assert reply.payload.order_id == "o-1"
    assert ids == {
        "message_id": str(reply.message_id),
        "correlation_id": str(envelope.correlation_id),
        "causation_id": str(envelope.message_id),
    }


def test_payment_reply_carries_the_amount() -> None:
    envelope = new_envelope(COMMANDS[0], correlation_id=uuid.uuid4())
    built = build_reply(envelope.to_json(), NOW)
    assert built is not None
    assert json.loads(built[1])["payload"]["amount_cents"] == 1250


def test_other_commands_get_no_reply() -> None:
    body = json.dumps({"type": "SendWelcomeEmail", "message_id": str(uuid.uuid4())}).encode()
    assert build_reply(body, NOW) is None


def test_relay_bodies_are_envelope_shaped_and_exactly_the_size_measured() -> None:
    for seq in (0, 7, 123_456):
        body = relay_body(seq)
        assert len(body) == BODY_BYTES
        assert json.loads(body)["payload"]["seq"] == seq


def test_bench_orders_are_valid_and_stock_covers_them() -> None:
    orders = [submitted("tag", i) for i in range(250)]
    assert len({o.order_id for o in orders}) == 250
    assert orders[3].order_id == order_id("tag", 3)
    stock = stock_for(250)
    for item in orders:
        assert stock[item.lines[0].sku] >= 1
    needed: dict[str, int] = {}
    for item in orders:
        needed[item.lines[0].sku] = needed.get(item.lines[0].sku, 0) + 1
    assert all(stock[sku] >= n for sku, n in needed.items())


async def taken(inbox: asyncio.Queue[Any], batch: int, max_wait: float) -> list[Any]:
    """`next_batch` over stand-in items (ints, strings) instead of deliveries."""
    return list(await next_batch(inbox, batch, max_wait))


async def test_next_batch_takes_what_is_waiting_up_to_the_batch_size() -> None:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    for i in range(100):
        inbox.put_nowait(i)
    assert await taken(inbox, 64, 0.005) == list(range(64))
    assert await taken(inbox, 64, 0.005) == list(range(64, 100))


async def test_next_batch_waits_at_most_max_wait_after_the_first() -> None:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.call_later(0.001, inbox.put_nowait, "first")
    loop.call_later(0.003, inbox.put_nowait, "second")
    loop.call_later(0.5, inbox.put_nowait, "late")
    started = loop.time()
    assert await taken(inbox, 64, 0.02) == ["first", "second"]
    assert loop.time() - started < 0.4
    assert await taken(inbox, 64, 0.0) == ["late"]
