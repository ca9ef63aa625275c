"""Which worker consumes which command. Workers bind their queue to exactly these types."""

from __future__ import annotations

from contracts import documents, enrollment, order
from contracts.base import Command

WORKER_COMMANDS: dict[str, tuple[type[Command], ...]] = {
    # order
    "payments": (order.ProcessPayment, order.RefundPayment),
    "inventory": (order.ReserveInventory, order.ReleaseInventory),
    "shipping": (order.CreateShipment, order.CancelShipment),
    # enrollment
    "courses": (
        enrollment.CheckCourseCapacity,
        enrollment.ConfirmEnrollment,
        enrollment.ReleaseSeat,
        enrollment.GrantCourseAccess,
        enrollment.RevokeCourseAccess,
    ),
    "notifications": (enrollment.SendWelcomeEmail, enrollment.SendEnrollmentNotice),
    # document approval
    "documents": (
        documents.GenerateDraft,
        documents.DeleteDraft,
        documents.GenerateFinal,
        documents.DeleteFinal,
        documents.FileDocument,
        documents.DeleteFiledDocument,
        documents.UpdateMasterIndex,
        documents.RestorePreviousVersion,
    ),
    "approvals": (
        documents.ReserveApprover,
        documents.ReleaseApprover,
        documents.EscalateApproval,
        documents.RecordApprovalDecision,
    ),
}


def worker_for(command: type[Command]) -> str:
    for worker, types in WORKER_COMMANDS.items():
        if command in types:
            return worker
    raise LookupError(f"no worker consumes {command.message_type}")
