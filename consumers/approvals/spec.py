"""The approvals worker: approval requests per role, escalations, decisions (schema `approvals`)."""

from __future__ import annotations

from consumers.approvals import tables
from consumers.approvals.handlers import make_handlers
from consumers.runtime import WorkerSpec
from contracts.routes import WORKER_COMMANDS

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
