"""The inventory worker: all-or-nothing stock reservations per order, in schema `inventory`."""

from __future__ import annotations

from consumers.inventory import tables
from consumers.inventory.handlers import make_handlers
from consumers.runtime import WorkerSpec
from contracts.routes import WORKER_COMMANDS

SPEC = WorkerSpec(
    name="inventory",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["inventory"],
    make_handlers=make_handlers,
    description="reserves and releases stock (ReserveInventory, ReleaseInventory)",
)
