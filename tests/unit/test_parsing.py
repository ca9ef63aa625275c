"""parse_body: every kind of hostile body gets a precise park reason, never an exception leak."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import order as msg
from contracts.envelope import new_envelope
from contracts.topology import ParkReason
from sagaline.messaging.errors import PermanentMessageError, error_summary
from sagaline.messaging.parsing import parse_body

LIMIT = 256 * 1024
JSON = "application/json"
SECRET = "s3cr3t-do-not-log-4242"


def envelope(**changes: Any) -> dict[str, Any]:
    """A valid OrderCancellationRequested envelope as a dict; `changes` replace top-level keys."""
    body: dict[str, Any] = {
        "message_id": "0f0f0f0f-0000-4000-8000-000000000001",
        "correlation_id": "0f0f0f0f-0000-4000-8000-000000000002",
        "causation_id": None,
        "type": "OrderCancellationRequested",
        "schema_version": 1,
        "occurred_at": "2030-01-01T12:00:00Z",
        "payload": {"order_id": "order-1", "reason": "changed my mind"},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def without(key: str) -> dict[str, Any]:
    return envelope(**{key: ...})


def payload(**changes: Any) -> dict[str, Any]:
    return envelope(payload={"order_id": "order-1", "reason": "changed my mind", **changes})


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


CASES = [
    # (body, content type, limit) -> reason
    pytest.param(b"x" * (LIMIT + 1), JSON, LIMIT, ParkReason.OVERSIZED, id="oversized"),
    pytest.param(b"{" * 5000, JSON, 4096, ParkReason.OVERSIZED, id="oversized invalid json"),
    pytest.param(encode(envelope()), "text/plain", LIMIT, ParkReason.WRONG_CONTENT_TYPE,
                 id="text/plain"),
    pytest.param(encode(envelope()), "", LIMIT, ParkReason.WRONG_CONTENT_TYPE,
                 id="empty content type"),
    pytest.param(encode(envelope()), "application/xml", LIMIT, ParkReason.WRONG_CONTENT_TYPE,
                 id="xml"),
    pytest.param(encode(envelope()), "application/json; charset=iso-8859-1", LIMIT,
                 ParkReason.WRONG_CONTENT_TYPE, id="json in latin-1"),
    pytest.param(encode(envelope()), "application/jsonp", LIMIT, ParkReason.WRONG_CONTENT_TYPE,
                 id="jsonp"),
    pytest.param(b"{not json", JSON, LIMIT, ParkReason.MALFORMED_JSON, id="malformed json"),
    pytest.param(b"", JSON, LIMIT, ParkReason.MALFORMED_JSON, id="empty body"),
    pytest.param(encode(envelope())[:-1], JSON, LIMIT, ParkReason.MALFORMED_JSON, id="truncated"),
    pytest.param(b'{"type": "\xff\xfe"}', JSON, LIMIT, ParkReason.MALFORMED_JSON,
                 id="non-utf-8 bytes"),
    pytest.param(b"\xef\xbb\xbf" + encode(envelope()), JSON, LIMIT, ParkReason.MALFORMED_JSON,
                 id="utf-8 bom"),
    pytest.param(nested(100_000), JSON, 10 * 1024 * 1024, ParkReason.MALFORMED_JSON,
                 id="100k nested arrays"),
    pytest.param(b'{"payload": ' + nested(100_000) + b"}", JSON, 10 * 1024 * 1024,
                 ParkReason.MALFORMED_JSON, id="deep nesting inside an object"),
    pytest.param(b"[]", JSON, LIMIT, ParkReason.INVALID_ENVELOPE, id="json array"),
    pytest.param(b'"text"', JSON, LIMIT, ParkReason.INVALID_ENVELOPE, id="json string"),
    pytest.param(encode(without("correlation_id")), JSON, LIMIT, ParkReason.INVALID_ENVELOPE,
                 id="missing correlation id"),
    pytest.param(encode(envelope(correlation_id="order-1")), JSON, LIMIT,
                 ParkReason.INVALID_ENVELOPE, id="correlation id not a uuid"),
    pytest.param(encode(envelope(correlation_id=12)), JSON, LIMIT, ParkReason.INVALID_ENVELOPE,
                 id="correlation id a number"),
    pytest.param(encode(without("message_id")), JSON, LIMIT, ParkReason.INVALID_ENVELOPE,
                 id="missing message id"),
    pytest.param(encode(without("occurred_at")), JSON, LIMIT, ParkReason.INVALID_ENVELOPE,
                 id="missing occurred_at"),
    pytest.param(encode(without("type")), JSON, LIMIT, ParkReason.INVALID_ENVELOPE,
                 id="missing type"),
    pytest.param(encode(envelope(type="Order Cancelled!")), JSON, LIMIT,
                 ParkReason.INVALID_ENVELOPE, id="type with bad characters"),
    pytest.param(encode(envelope(type="T" * 101)), JSON, LIMIT, ParkReason.INVALID_ENVELOPE,
                 id="type too long"),
    pytest.param(encode(envelope(schema_version=0)), JSON, LIMIT, ParkReason.INVALID_ENVELOPE,
                 id="schema version 0"),
    pytest.param(encode(envelope(type="OrderTeleported")), JSON, LIMIT, ParkReason.UNKNOWN_TYPE,
                 id="unknown type"),
    pytest.param(encode(envelope(schema_version=2)), JSON, LIMIT,
                 ParkReason.UNSUPPORTED_SCHEMA_VERSION, id="newer schema version"),
    pytest.param(encode(without("payload")), JSON, LIMIT, ParkReason.SCHEMA_INVALID,
                 id="missing payload"),
    pytest.param(encode(payload(reason="")), JSON, LIMIT, ParkReason.SCHEMA_INVALID,
                 id="empty reason"),
    pytest.param(encode(payload(order_id=7)), JSON, LIMIT, ParkReason.SCHEMA_INVALID,
                 id="number for a string (strict)"),
    pytest.param(encode(payload(amount_cents=1)), JSON, LIMIT, ParkReason.SCHEMA_INVALID,
                 id="unknown payload field"),
    pytest.param(encode(envelope(extra=1)), JSON, LIMIT, ParkReason.SCHEMA_INVALID,
                 id="unknown envelope field"),
    pytest.param(encode(envelope(type="PaymentProcessed")), JSON, LIMIT,
                 ParkReason.SCHEMA_INVALID, id="payload of another type"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "content_type", "limit", "reason"), CASES)
def test_bad_body_is_parked_with_its_reason(
    body: bytes, content_type: str, limit: int, reason: ParkReason
) -> None:
    with pytest.raises(PermanentMessageError) as caught:
        parse_body(body, content_type, limit)
    assert caught.value.reason == reason, caught.value.summary
    assert 0 < len(caught.value.summary) <= 500
    assert error_summary(caught.value) == caught.value.summary


def test_size_limit_is_checked_before_parsing() -> None:
    huge_garbage = b"\xff" + b"[" * 2_000_000
    with pytest.raises(PermanentMessageError) as caught:
        parse_body(huge_garbage, "text/plain", LIMIT)
    assert caught.value.reason == ParkReason.OVERSIZED
    assert str(len(huge_garbage)) in caught.value.summary


def test_body_exactly_at_the_limit_is_parsed() -> None:
    body = encode(envelope())
    assert parse_body(body, JSON, len(body)).type == "OrderCancellationRequested"


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "Application/JSON", "application/json; charset=utf-8",
     "application/json; charset=UTF-8", "application/json;charset=UTF-8",
     'application/json; charset="utf-8"'],
)  # fmt: skip
def test_json_content_types_are_accepted(content_type: str | None) -> None:
    assert parse_body(encode(envelope()), content_type, LIMIT).type == "OrderCancellationRequested"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(encode(payload(reason=SECRET * 20)), id="too long"),
        pytest.param(encode(payload(order_id=[SECRET])), id="wrong type"),
        pytest.param(encode(envelope(correlation_id=SECRET)), id="bad correlation id"),
        pytest.param(encode(envelope(occurred_at=SECRET)), id="bad timestamp"),
        pytest.param(encode(envelope(schema_version=SECRET)), id="bad schema version"),
        pytest.param(encode(envelope(extra=SECRET)), id="unknown field's value"),
        pytest.param(encode(envelope(type="PaymentProcessed", payload={"x": SECRET})),
                     id="payload of another type"),
    ],
)  # fmt: skip
def test_summary_never_quotes_input_values(body: bytes) -> None:
    with pytest.raises(PermanentMessageError) as caught:
        parse_body(body, JSON, LIMIT)
    assert SECRET not in caught.value.summary
    assert SECRET not in str(caught.value)


def test_summary_never_quotes_unknown_field_names() -> None:
    body = encode(payload(**{f"{SECRET}\nforged log line": 1}))
    with pytest.raises(PermanentMessageError) as caught:
        parse_body(body, JSON, LIMIT)
    assert caught.value.reason == ParkReason.SCHEMA_INVALID
    assert SECRET not in caught.value.summary
    assert "\n" not in caught.value.summary


def test_summary_lists_at_most_five_errors() -> None:
    body = encode(
        envelope(
            type="OrderSubmitted",
            payload={"order_id": 1, "customer_id": 2, "amount_cents": "x", "currency": 3,
                     "card_token": 4, "lines": 5, "ship_to": 6},
        )
    )  # fmt: skip
    with pytest.raises(PermanentMessageError) as caught:
        parse_body(body, JSON, LIMIT)
    assert caught.value.reason == ParkReason.SCHEMA_INVALID
    assert caught.value.summary.count(": ") == 5
    assert caught.value.summary.endswith("(+2 more)")


def test_valid_envelope_round_trips() -> None:
    submitted = msg.OrderSubmitted(
        order_id="order-1",
        customer_id="cust-1",
        amount_cents=12_345,
        currency="EUR",
        card_token="tok",
        lines=(msg.OrderLine(sku="sku-1", quantity=2),),
        ship_to=msg.Address(country="DE", postcode="10115", city="Berlin"),
    )
    sent = new_envelope(
        submitted,
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        occurred_at=datetime(2030, 1, 1, 12, 0, tzinfo=UTC),
    )

    received = parse_body(sent.to_json(), JSON, LIMIT)

    assert received == sent
    assert isinstance(received.payload, msg.OrderSubmitted)
    assert received.payload == submitted


def test_reply_envelope_keeps_its_causation_id() -> None:
    command_id = uuid.uuid4()
    sent = new_envelope(
        msg.InventoryReserved(order_id="order-1"),
        correlation_id=uuid.uuid4(),
        causation_id=command_id,
    )
    assert parse_body(sent.to_json(), None, LIMIT).causation_id == command_id
