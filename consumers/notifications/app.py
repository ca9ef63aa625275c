"""The notifications worker: e-mails recorded once per saga and template, in `notifications`."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from consumers.notifications import tables
from consumers.notifications.handlers import make_handlers
from consumers.runtime import WorkerSpec, build_worker
from consumers.settings import WorkerSettings
from contracts.routes import WORKER_COMMANDS
from sagaline.settings import Settings

SPEC = WorkerSpec(
    name="notifications",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["notifications"],
    make_handlers=make_handlers,
    description="renders and records e-mails (SendWelcomeEmail, SendEnrollmentNotice)",
)


def build_app(settings: Settings, config: WorkerSettings | None = None) -> AsgiFastStream:
    return build_worker(SPEC, settings, config)
