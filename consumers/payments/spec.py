"""The payments worker: charges and refunds per order, in schema `payments`."""

from __future__ import annotations

from consumers.payments import tables
from consumers.payments.handlers import make_handlers
from consumers.runtime import WorkerSpec
from contracts.routes import WORKER_COMMANDS

SPEC = WorkerSpec(
    name="payments",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["payments"],
    make_handlers=make_handlers,
    description="charges and refunds orders (ProcessPayment, RefundPayment)",
)
