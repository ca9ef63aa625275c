"""Which worker consumes which command. Workers bind their queue to exactly these types."""

from __future__ import annotations

from contracts import order
from contracts.base import Command

WORKER_COMMANDS: dict[str, tuple[type[Command], ...]] = {
    "payments": (order.ProcessPayment, order.RefundPayment),
    "inventory": (order.ReserveInventory, order.ReleaseInventory),
    "shipping": (order.CreateShipment, order.CancelShipment),
}
from contracts import enrollment  # noqa: E402 - registered at its marker line

WORKER_COMMANDS.update(
    {
        "courses": (
            enrollment.CheckCourseCapacity,
            enrollment.ConfirmEnrollment,
            enrollment.ReleaseSeat,
            enrollment.GrantCourseAccess,
            enrollment.RevokeCourseAccess,
        ),
        "notifications": (enrollment.SendWelcomeEmail, enrollment.SendEnrollmentNotice),
    }
)
# enrollment-routes-here
from contracts import documents  # noqa: E402 - registered at its marker line

WORKER_COMMANDS.update(
    {
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
)
# documents-routes-here


def worker_for(command: type[Command]) -> str:
    for worker, types in WORKER_COMMANDS.items():
        if command in types:
            return worker
    raise LookupError(f"no worker consumes {command.message_type}")
