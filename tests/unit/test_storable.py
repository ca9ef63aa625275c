"""Values pydantic would accept but PostgreSQL refuses are `schema-invalid` at once.

Before, a NUL in an order id passed validation, failed inside the batch's transaction, was
retried for ~36 s (rolling back the good messages batched with it each time) and ended as
`retries-exhausted`.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts import documents as d
from contracts import order as o
from contracts.envelope import new_envelope
from contracts.storable import BIGINT_MAX, _leaves, _storable, unstorable_reason
from contracts.topology import ParkReason
from sagaline.messaging.errors import PermanentMessageError
from sagaline.messaging.parsing import parse_body

LIMIT = 256 * 1024


def submitted_body(**payload_changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "order_id": "order-1",
        "customer_id": "customer-1",
        "amount_cents": 1_000,
        "currency": "EUR",
        "card_token": "tok_ok",
        "lines": [{"sku": "sku-1", "quantity": 1}],
        "ship_to": {"country": "DE", "postcode": "10115", "city": "Berlin"},
    }
    payload.update(payload_changes)
    return {
        "message_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
        "type": "OrderSubmitted",
        "schema_version": 1,
        "occurred_at": "2030-01-01T12:00:00Z",
        "payload": payload,
    }


def refusal(body: dict[str, Any]) -> PermanentMessageError:
    with pytest.raises(PermanentMessageError) as caught:
        parse_body(json.dumps(body).encode(), "application/json", LIMIT)
    return caught.value


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"order_id": "order-\u0000-1"}, "payload.order_id"),
        ({"ship_to": {"country": "DE", "postcode": "10115", "city": "Ber\u0000lin"}},
         "payload.ship_to.city"),
        ({"lines": [{"sku": "sku-1", "quantity": 1}, {"sku": "\u0000", "quantity": 1}]},
         "payload.lines.1.sku"),
    ],
)  # fmt: skip
def test_nul_in_text_is_schema_invalid_and_names_the_field(
    changes: dict[str, Any], where: str
) -> None:
    refused = refusal(submitted_body(**changes))
    assert refused.reason == ParkReason.SCHEMA_INVALID
    assert where in refused.summary
    assert "\u0000" not in refused.summary


def test_lone_surrogate_never_reaches_the_database() -> None:
    raw = json.dumps(submitted_body()).replace("order-1", "order-\\ud800")
    with pytest.raises(PermanentMessageError) as caught:
        parse_body(raw.encode(), "application/json", LIMIT)
    assert caught.value.reason in (ParkReason.SCHEMA_INVALID, ParkReason.MALFORMED_JSON)


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_timestamp_that_leaves_the_range_in_utc_is_refused(occurred_at: str) -> None:
    body = submitted_body()
    body["occurred_at"] = occurred_at
    refused = refusal(body)
    assert refused.reason == ParkReason.INVALID_ENVELOPE
    assert "occurred_at" in refused.summary


def test_payload_timestamp_out_of_range_is_refused() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=3)))
    with pytest.raises(ValidationError, match="timestamp out of range"):
        d.ReserveApprover(
            document_id="doc-1", change_id="change-1", role="owner", tier=1, respond_by=early
        )


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("plain text ü 漢字 🚀", True),
        ("a\u0000b", False),
        ("\udc80", False),
        (BIGINT_MAX, True),
        (BIGINT_MAX + 1, False),
        (-(2**63), True),
        (-(2**63) - 1, False),
        (True, True),
        (0.5, True),
        (float("nan"), False),
        (float("inf"), False),
        (datetime(2030, 1, 1, tzinfo=UTC), True),
        (datetime(1, 1, 1), True),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), False),
    ],
)
def test_unstorable_reason(value: object, stored: bool) -> None:
    assert (unstorable_reason(value) is None) is stored


def test_commands_the_orchestrator_builds_are_checked_too() -> None:
    with pytest.raises(ValidationError, match=r"not_storable|NUL"):
        o.ProcessPayment(
            order_id="order-\u0000", customer_id="c", amount_cents=1, currency="EUR",
            card_token="tok_ok",
        )  # fmt: skip


def test_valid_message_still_round_trips() -> None:
    sent = new_envelope(
        o.OrderCancellationRequested(order_id="order-1", reason="changed my mind"),
        correlation_id=uuid.uuid4(),
    )
    assert parse_body(sent.to_json(), "application/json", LIMIT) == sent


_LEAVES = st.one_of(
    st.text(max_size=6),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_the_quick_check_agrees_with_the_walk_that_names_fields(value: object) -> None:
    # check_storable asks the path-free walk first and builds paths only when it fails.
    by_walk = all(unstorable_reason(leaf) is None for _, leaf in _leaves(value, ()))
    assert _storable(value) is by_walk
