"""sagaline bench: the minimal step sends the orchestrator's commands, which the stub answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from contracts.envelope import envelope_model
from contracts.registry import message_class
from sagaline_tools.bench.minimal_flow import DONE, FLOW, START, command_body, parse_event, step
from sagaline_tools.bench.minimal_step import mark_sql
from sagaline_tools.bench.stub_worker import build_reply
from sagaline_tools.bench.workload import order_envelope

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def test_an_order_walks_to_completed_through_the_stub_replies() -> None:
    """Each command is a valid contract envelope; the stub's reply is what the next rule waits
    for; four events take the saga from nothing to completed."""
    submitted = order_envelope("t", 1)
    event = parse_event(submitted.to_json())
    data = event.payload
    state: str | None = None
    seen = []
    while True:
        rule = FLOW[event.type]
        assert step(rule, state)
        state = rule.moves_to
        seen.append(event.type)
        if rule.command is None:
            break
        command_id = uuid.uuid4()
        body = command_body(
            rule,
            data,
            message_id=command_id,
            saga_id=event.saga_id,
            causation_id=event.message_id,
            now=NOW,
        )
        model = message_class(rule.command)
        assert model is not None
        command = envelope_model(model).model_validate_json(body)
        assert command.correlation_id == submitted.correlation_id
        assert command.causation_id == event.message_id
        built = build_reply(body, NOW)
        assert built is not None
        event = parse_event(built[1])
        assert event.saga_id == submitted.correlation_id
    assert seen == [START, "PaymentProcessed", "InventoryReserved", "OrderShipped"]
    assert state == DONE


def test_an_event_for_another_state_does_not_apply() -> None:
    assert not step(FLOW["PaymentProcessed"], "awaiting_shipment")
    assert not step(FLOW[START], "awaiting_payment")


@pytest.mark.parametrize("body", [b"{}", b"[]", b"not json", b'{"message_id": "x"}'])
def test_a_body_without_the_fields_read_is_refused(body: bytes) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        parse_event(body)


def test_the_mark_lists_integers_only() -> None:
    assert "ANY('{3,4,5}')" in mark_sql([3, 4, 5])
    with pytest.raises(ValueError, match="invalid literal"):
        mark_sql(["1); DROP TABLE x; --"])  # type: ignore[list-item]
