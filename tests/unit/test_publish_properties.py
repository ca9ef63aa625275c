"""The relay builds AMQP properties directly; they must be what an aio-pika Message would send."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.topology import H_SCHEMA_VERSION
from sagaline.messaging.publish import amqp_message, amqp_properties


@pytest.mark.parametrize(
    ("headers", "user_id"),
    [
        (None, None),
        ({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, "orch"),
        ({H_SCHEMA_VERSION: 2, "x-sagaline-actor": "ops"}, None),
    ],
)
def test_direct_properties_equal_the_messages(
    headers: dict[str, Any] | None, user_id: str | None
) -> None:
    ids = {"message_id": "m-1", "correlation_id": "c-1", "message_type": "ChargePayment"}
    direct = amqp_properties(**ids, headers=headers, user_id=user_id)
    via_message = amqp_message(
        b"{}",
        message_id=ids["message_id"],
        correlation_id=ids["correlation_id"],
        message_type=ids["message_type"],
        headers=headers,
        user_id=user_id,
    ).properties
    assert direct == via_message
    assert dict(direct) == dict(via_message)  # every field, not only those __eq__ compares
    assert direct.headers is not None
    assert direct.headers[H_SCHEMA_VERSION] == (headers or {}).get(H_SCHEMA_VERSION, 1)
