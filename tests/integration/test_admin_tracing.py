"""One trace from an event to the worker's reply: event → saga transition → command → worker
(consume, publish) → reply → next transition, exported to an in-memory exporter.

The orchestrator and the payments worker run in-process, so every span lands in one exporter.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import aio_pika
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaline.messaging.publish import publish_envelope
from tests.integration.support import order_submitted
from tests.integration.test_admin import Stack, db, ops_settings, stack, wait_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

__all__ = ["db", "ops_settings", "stack"]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans of this process. The global provider can be set once per process: reuse it."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    value = InMemorySpanExporter()
    processor = SimpleSpanProcessor(value)
    provider.add_span_processor(processor)
    try:
        yield value
    finally:
        # TracerProvider has no remove: stop this exporter from keeping spans of later tests.
        value.shutdown()


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_event_transition_command_worker_and_reply_share_one_trace(
    stack: Stack, db: AsyncEngine, exporter: InMemorySpanExporter
) -> None:
    settings = stack.settings
    await stack.start("orchestrator")
    await stack.start("payments")  # no inventory worker: the saga stops after the payment
    submitted = order_submitted()
    saga_id = submitted.correlation_id

    with trace.get_tracer("tests").start_as_current_span("shop submits order") as root:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        connection = await aio_pika.connect(settings.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await publish_envelope(
                channel, settings.topology.events_exchange, submitted, headers=headers
            )
        finally:
            await connection.close()
    await wait_state(db, saga_id, "awaiting_inventory")

    trace_id = root.get_span_context().trace_id
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    transitions = {
        str(s.attributes.get("saga.to_state")): s
        for s in spans
        if s.name == "saga transition" and s.attributes.get("saga.id") == str(saga_id)
    }
    assert set(transitions) >= {"awaiting_payment", "awaiting_inventory"}, [s.name for s in spans]
    started = transitions["awaiting_payment"]
    assert started.parent is not None and started.parent.span_id == root.get_span_context().span_id

    # The relay's publish of the command carried the transition's context to the worker.
    (consumed,) = [
        s
        for s in children(spans, started)
        if s.kind is trace.SpanKind.CONSUMER and "ProcessPayment" in s.name
    ]
    # The worker's reply publish continues under its consume span ...
    reply_spans = descendants(spans, consumed)
    assert any(
        s.kind is trace.SpanKind.PRODUCER
        and s.attributes.get("messaging.rabbitmq.destination.routing_key") == "PaymentProcessed"
        for s in reply_spans
    ), [s.name for s in spans]
    # ... and the orchestrator's next transition continues under the reply.
    paid = transitions["awaiting_inventory"]
    assert paid.parent is not None
    assert paid.parent.span_id in {s.context.span_id for s in reply_spans}
    assert paid.attributes.get("saga.from_state") == "awaiting_payment"
    assert uuid.UUID(str(paid.attributes.get("saga.id"))) == saga_id


def descendants(spans: list[ReadableSpan], ancestor: ReadableSpan) -> list[ReadableSpan]:
    found: list[ReadableSpan] = []
    frontier = [ancestor]
    while frontier:
        below = children(spans, frontier.pop())
        found += below
        frontier += below
    return found
