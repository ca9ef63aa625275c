"""OpenTelemetry set-up from the standard OTEL_* variables; tracing is off without them.

FastStream's RabbitTelemetryMiddleware creates the consume and publish spans and carries W3C
trace context in AMQP headers; this module only installs an SDK tracer provider with an
exporter when the environment asks for one.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter


def _exporter() -> SpanExporter | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if kind == "none" or (not kind and not endpoint):
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    # The OTLP/HTTP exporter reads endpoint, headers, timeout and TLS from OTEL_EXPORTER_OTLP_*.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def configure_tracing(service: str) -> TracerProvider | None:
    """Install a tracer provider when an exporter is configured; returns it (None = off)."""
    exporter = _exporter()
    if exporter is None:
        return None
    name = os.environ.get("OTEL_SERVICE_NAME", f"sagaline-{service}")
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
