"""With tracing off, a step passes its trigger's trace context on as the no-op span did."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from opentelemetry import propagate, trace

from orchestrator.store.plan import _untraced_carrier

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def through_a_no_op_span(headers: Mapping[str, str]) -> dict[str, str]:
    """What planning wrote before it skipped the span when no SDK provider is installed."""
    parent = propagate.extract(dict(headers))
    with trace.NoOpTracer().start_as_current_span("saga transition", context=parent):
        carrier = dict(headers)
        propagate.inject(carrier)
    return carrier


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": PARENT},
        {"traceparent": PARENT, "tracestate": "vendor=value"},
        {"traceparent": "00-not-a-trace-01"},  # kept as it came, as before
        {"tracestate": "vendor=value"},
    ],
)
def test_the_carrier_is_what_the_no_op_span_wrote(headers: dict[str, str]) -> None:
    assert _untraced_carrier(headers) == through_a_no_op_span(headers)


def test_a_valid_parent_is_passed_on() -> None:
    assert _untraced_carrier({"traceparent": PARENT})["traceparent"] == PARENT
