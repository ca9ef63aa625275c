"""The order saga of the minimal step, as a lookup table (pure: no I/O).

What the bench's minimal step (minimal_step.py) decides per event: the state a saga must be in,
the state it moves to, and the command it sends, built from the saga's data (the order as
submitted) with plain `json`. The commands are the same contract messages the orchestrator
sends, so the same stub worker answers them; nothing is validated beyond the fields it reads.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

START = "OrderSubmitted"
DONE = "completed"

Payload = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    expects: str | None
    """The state the saga must be in (None: the event starts a new saga)."""
    moves_to: str
    command: str | None
    fields: tuple[str, ...] = ()
    """The fields of the saga's data the command carries."""


FLOW: dict[str, Rule] = {
    START: Rule(
        None,
        "awaiting_payment",
        "ProcessPayment",
        ("order_id", "customer_id", "amount_cents", "currency", "card_token"),
    ),
    "PaymentProcessed": Rule(
        "awaiting_payment", "awaiting_inventory", "ReserveInventory", ("order_id", "lines")
    ),
    "InventoryReserved": Rule(
        "awaiting_inventory",
        "awaiting_shipment",
        "CreateShipment",
        ("order_id", "ship_to", "lines"),
    ),
    "OrderShipped": Rule("awaiting_shipment", DONE, None),
}


@dataclass(frozen=True)
class Event:
    message_id: uuid.UUID
    saga_id: uuid.UUID
    type: str
    payload: Payload


def parse_event(body: bytes) -> Event:
    """The fields the step reads; KeyError/ValueError for a body that lacks them."""
    doc = json.loads(body)
    return Event(
        uuid.UUID(doc["message_id"]), uuid.UUID(doc["correlation_id"]), doc["type"], doc["payload"]
    )


def step(rule: Rule, state: str | None) -> bool:
    """Whether the rule applies to a saga in `state` (an event for another state is ignored)."""
    return rule.expects == state


def command_body(
    rule: Rule,
    data: Payload,
    *,
    message_id: uuid.UUID,
    saga_id: uuid.UUID,
    causation_id: uuid.UUID,
    now: datetime,
) -> bytes:
    """The command's envelope JSON."""
    assert rule.command is not None
    return json.dumps(
        {
            "message_id": str(message_id),
            "correlation_id": str(saga_id),
            "causation_id": str(causation_id),
            "type": rule.command,
            "schema_version": 1,
            "occurred_at": now.isoformat(),
            "payload": {name: data[name] for name in rule.fields},
        }
    ).encode()
