"""One complete, valid envelope for each event other services publish to sagaline.

Built from the models (so an example that stops validating fails at import), shown in the
AsyncAPI document and in README.md's publishing guide (a unit test keeps README in step).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from contracts import documents as d
from contracts import enrollment as e
from contracts import order as o
from contracts.base import Event
from contracts.envelope import Envelope, new_envelope

_AT = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


def _example(event: Event, message_id: str, correlation_id: str) -> Envelope[Any]:
    return new_envelope(
        event,
        message_id=uuid.UUID(message_id),
        correlation_id=uuid.UUID(correlation_id),
        occurred_at=_AT,
    )


_ORDER_SAGA = "5b0f3c1e-8d4a-4f6b-9c2d-1a7e3b9f0c42"
_DOCUMENT_SAGA = "9e2d7a41-3c5b-4e8f-a1d6-0b4c8f2e7a13"

EXAMPLES: dict[str, Envelope[Any]] = {
    envelope.type: envelope
    for envelope in (
        _example(
            o.OrderSubmitted(
                order_id="order-1042",
                customer_id="customer-7",
                amount_cents=4998,
                currency="EUR",
                card_token="tok_visa_4242",
                lines=(
                    o.OrderLine(sku="SKU-RED-MUG", quantity=2),
                    o.OrderLine(sku="SKU-TEA-250G", quantity=1),
                ),
                ship_to=o.Address(country="DE", postcode="10115", city="Berlin"),
            ),
            "0f8c2a8e-2b1d-4c7e-9a43-6d5f1e0b7c21",
            _ORDER_SAGA,
        ),
        _example(
            o.OrderCancellationRequested(order_id="order-1042", reason="customer changed mind"),
            "7c1e9b24-5a3f-4d8e-b6c0-2f9a4e1d8b35",
            _ORDER_SAGA,
        ),
        _example(
            e.EnrollmentRequested(
                user_id="user-311", course_id="sagas-101", email="ada@example.com"
            ),
            "3d6a0f57-9e2b-4c1a-8f4d-7b5e2c9a1f68",
            "c4a8e1f2-6b3d-4a9e-8c7f-5d2b1e0a9f36",
        ),
        _example(
            d.DocumentChangeDetected(
                document_id="orders-schema",
                change_id="chg-2026-12-04-01",
                title="orders: new column shipped_at",
                metadata=d.DocumentMetadata(object_type="schema"),
                quality_score=0.97,
            ),
            "a2f5c8e1-4b7d-4e0a-9c3f-6d1b8e5a2c74",
            _DOCUMENT_SAGA,
        ),
        _example(
            d.ApprovalGranted(
                document_id="orders-schema",
                change_id="chg-2026-12-04-01",
                role="data_steward",
                approver="grace",
                comment="looks right",
            ),
            "b8e3d1a6-2c9f-4b5e-8a7d-3f0c6e9b1d52",
            _DOCUMENT_SAGA,
        ),
        _example(
            d.ApprovalRejected(
                document_id="orders-schema",
                change_id="chg-2026-12-04-01",
                role="data_steward",
                approver="grace",
                comment="the column is misnamed",
            ),
            "e1c7a9f3-8d2b-4a6e-b5c0-9f4d2a7e3b18",
            _DOCUMENT_SAGA,
        ),
    )
}


def example_json(message_type: str) -> dict[str, Any]:
    """The example envelope as the JSON object a publisher sends."""
    return EXAMPLES[message_type].model_dump(mode="json")
