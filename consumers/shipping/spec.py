"""The shipping worker: shipments per order, in schema `shipping`."""

from __future__ import annotations

from consumers.runtime import WorkerSpec
from consumers.shipping import tables
from consumers.shipping.handlers import make_handlers
from contracts.routes import WORKER_COMMANDS

SPEC = WorkerSpec(
    name="shipping",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["shipping"],
    make_handlers=make_handlers,
    description="creates and cancels shipments (CreateShipment, CancelShipment)",
)
