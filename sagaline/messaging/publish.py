"""Publishing envelopes with the AMQP properties that mirror them."""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, DeliveryMode
from aiormq import spec

from contracts.behaviour import CONTENT_TYPE
from contracts.envelope import Envelope
from contracts.topology import H_CAUSATION_ID, H_SCHEMA_VERSION


def amqp_message(
    body: bytes,
    *,
    message_id: str,
    correlation_id: str,
    message_type: str,
    causation_id: str | None = None,
    schema_version: int = 1,
    headers: dict[str, Any] | None = None,
    user_id: str | None = None,
) -> aio_pika.Message:
    """`user_id`: the publishing connection's broker user (RabbitMQ checks it), or None."""
    return aio_pika.Message(
        body=body,
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        type=message_type,
        headers=_all_headers(headers, schema_version, causation_id),
        app_id="sagaline",
        user_id=user_id,
    )


def amqp_properties(
    *,
    message_id: str,
    correlation_id: str,
    message_type: str,
    headers: dict[str, Any] | None = None,
    user_id: str | None = None,
) -> spec.Basic.Properties:
    """The properties `amqp_message` would carry, built directly for a publish on the aiormq
    channel (the outbox relay): no aio-pika Message per row, whose construction and
    attribute checks cost ~5% of the orchestrator's CPU at half load."""
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=0,  # what aio-pika sends when none is given
        message_id=message_id,
        correlation_id=correlation_id,
        message_type=message_type,
        headers=_all_headers(headers, 1, None),
        app_id="sagaline",
        user_id=user_id,
    )


def _all_headers(
    headers: dict[str, Any] | None, schema_version: int, causation_id: str | None
) -> dict[str, Any]:
    all_headers: dict[str, Any] = {H_SCHEMA_VERSION: schema_version, **(headers or {})}
    if causation_id is not None:
        all_headers[H_CAUSATION_ID] = causation_id
    return all_headers


def envelope_message(
    envelope: Envelope[Any], headers: dict[str, Any] | None = None
) -> aio_pika.Message:
    return amqp_message(
        envelope.to_json(),
        message_id=str(envelope.message_id),
        correlation_id=str(envelope.correlation_id),
        message_type=envelope.type,
        causation_id=str(envelope.causation_id) if envelope.causation_id else None,
        schema_version=envelope.schema_version,
        headers=headers,
    )


async def publish_envelope(
    channel: AbstractChannel,
    exchange_name: str,
    envelope: Envelope[Any],
    *,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish persistently and wait for the broker's confirm; unroutable messages raise."""
    exchange = await channel.get_exchange(exchange_name, ensure=False)
    await exchange.publish(
        envelope_message(envelope, headers), routing_key=envelope.type, mandatory=True
    )
