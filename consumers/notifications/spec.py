"""The notifications worker: e-mails recorded once per saga and template, in `notifications`."""

from __future__ import annotations

from consumers.notifications import tables
from consumers.notifications.handlers import make_handlers
from consumers.runtime import WorkerSpec
from contracts.routes import WORKER_COMMANDS

SPEC = WorkerSpec(
    name="notifications",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["notifications"],
    make_handlers=make_handlers,
    description="renders and records e-mails (SendWelcomeEmail, SendEnrollmentNotice)",
)
