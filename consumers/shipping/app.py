"""The shipping worker: shipments per order, in schema `shipping`."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from consumers.runtime import WorkerSpec, build_worker
from consumers.settings import WorkerSettings
from consumers.shipping import tables
from consumers.shipping.handlers import make_handlers
from contracts.routes import WORKER_COMMANDS
from sagaline.settings import Settings

SPEC = WorkerSpec(
    name="shipping",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["shipping"],
    make_handlers=make_handlers,
    description="creates and cancels shipments (CreateShipment, CancelShipment)",
)


def build_app(settings: Settings, config: WorkerSettings | None = None) -> AsgiFastStream:
    return build_worker(SPEC, settings, config)
