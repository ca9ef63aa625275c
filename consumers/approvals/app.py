"""The approvals worker: approval requests per role, escalations, decisions (schema `approvals`)."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from consumers.approvals import tables
from consumers.approvals.handlers import make_handlers
from consumers.runtime import WorkerSpec, build_worker
from consumers.settings import WorkerSettings
from contracts.routes import WORKER_COMMANDS
from sagaline.settings import Settings

SPEC = WorkerSpec(
    name="approvals",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["approvals"],
    make_handlers=make_handlers,
    description=(
        "approval requests per role, escalations and decisions "
        "(ReserveApprover, ReleaseApprover, EscalateApproval, RecordApprovalDecision)"
    ),
)


def build_app(settings: Settings, config: WorkerSettings | None = None) -> AsgiFastStream:
    return build_worker(SPEC, settings, config)
