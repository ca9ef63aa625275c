"""sagaline bench: seeded rows are shaped by the engine itself."""

from __future__ import annotations

import base64
import json

from contracts.envelope import EnvelopeHeader
from contracts.topology import Topology
from sagaline_tools.bench.seed import (
    ORDER_PLACEHOLDER,
    OUTSTANDING_PLACEHOLDER,
    SEED_SQL,
    order_templates,
    steps_json,
)


def test_live_template_is_an_order_awaiting_payment_with_its_timer() -> None:
    live, _ = order_templates()
    assert live.workflow == "order"
    assert live.state == "awaiting_payment"
    assert not live.finished
    assert live.version == 1
    assert live.timer == "step-timeout"
    assert live.outstanding_step == 1
    assert json.loads(live.runtime)["outstanding"] == [OUTSTANDING_PLACEHOLDER]
    assert json.loads(live.data)["order_id"] == ORDER_PLACEHOLDER
    [step] = live.steps
    assert (step.message_type, step.outcome, step.to_state) == (
        "OrderSubmitted",
        "started",
        "awaiting_payment",
    )
    assert step.out_type == "ProcessPayment"


def test_finished_template_went_through_every_step() -> None:
    _, done = order_templates()
    assert done.state == "completed"
    assert done.finished
    assert done.version == 4
    assert done.timer is None
    assert done.outstanding_step is None
    assert [s.message_type for s in done.steps] == [
        "OrderSubmitted",
        "PaymentProcessed",
        "InventoryReserved",
        "OrderShipped",
    ]
    assert [s.out_type for s in done.steps] == [
        "ProcessPayment",
        "ReserveInventory",
        "CreateShipment",
        "OrderCompleted",
    ]
    assert [s.out_kind for s in done.steps] == ["command", "command", "command", "event"]
    data = json.loads(done.data)
    assert data["payment_id"] and data["tracking_number"]


def test_steps_json_routes_commands_and_events_and_keeps_real_bodies() -> None:
    topology = Topology(namespace="ns")
    _, done = order_templates()
    rows = json.loads(steps_json(done, topology))
    assert [r["out_exchange"] for r in rows] == ["ns.commands"] * 3 + ["ns.events"]
    for row in rows:
        header = EnvelopeHeader.model_validate_json(base64.b64decode(row["body"]))
        assert header.type == row["out_type"]
        assert ORDER_PLACEHOLDER.encode() in base64.b64decode(row["body"])


def test_seed_sql_fills_every_saga_table() -> None:
    for table in ("instances", "inbox", "history", "outbox", "timers"):
        assert f"INSERT INTO saga.{table}" in SEED_SQL
