"""The payments worker: charges and refunds per order, in schema `payments`."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from consumers.payments import tables
from consumers.payments.handlers import make_handlers
from consumers.runtime import WorkerSpec, build_worker
from consumers.settings import WorkerSettings
from contracts.routes import WORKER_COMMANDS
from sagaline.settings import Settings

SPEC = WorkerSpec(
    name="payments",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["payments"],
    make_handlers=make_handlers,
    description="charges and refunds orders (ProcessPayment, RefundPayment)",
)


def build_app(settings: Settings, config: WorkerSettings | None = None) -> AsgiFastStream:
    return build_worker(SPEC, settings, config)
