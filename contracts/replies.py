"""Which replies answer which command: part of the contract between orchestrator and workers.

A worker answers every command with exactly one of these replies (a business outcome, never an
exception); the reply's envelope carries the command's message id as its causation id. The
published contract (AsyncAPI) shows the pairs; a unit test keeps them in line with what the
workflows wait for.
"""

from __future__ import annotations

from contracts import documents as d
from contracts import enrollment as e
from contracts import order as o
from contracts.base import Command, ReplyEvent

REPLIES: dict[type[Command], tuple[type[ReplyEvent], ...]] = {
    # order
    o.ProcessPayment: (o.PaymentProcessed, o.PaymentFailed),
    o.RefundPayment: (o.PaymentRefunded,),
    o.ReserveInventory: (o.InventoryReserved, o.InventoryReservationFailed),
    o.ReleaseInventory: (o.InventoryReleased,),
    o.CreateShipment: (o.OrderShipped, o.ShipmentFailed),
    o.CancelShipment: (o.ShipmentCancelled,),
    # enrollment
    e.CheckCourseCapacity: (e.CourseCapacityChecked,),
    e.ConfirmEnrollment: (e.EnrollmentConfirmed, e.EnrollmentConfirmationFailed),
    e.ReleaseSeat: (e.SeatReleased,),
    e.GrantCourseAccess: (e.CourseAccessGranted, e.CourseAccessDenied),
    e.RevokeCourseAccess: (e.CourseAccessRevoked,),
    e.SendWelcomeEmail: (e.WelcomeEmailSent, e.WelcomeEmailFailed),
    e.SendEnrollmentNotice: (e.EnrollmentNoticeSent,),
    # document approval
    d.GenerateDraft: (d.DraftGenerated, d.DraftGenerationFailed),
    d.DeleteDraft: (d.DraftDeleted,),
    d.ReserveApprover: (d.ApproverReserved,),
    d.ReleaseApprover: (d.ApproverReleased,),
    d.EscalateApproval: (d.ApprovalEscalated,),
    d.RecordApprovalDecision: (d.ApprovalDecisionRecorded,),
    d.GenerateFinal: (d.FinalGenerated, d.FinalGenerationFailed),
    d.DeleteFinal: (d.FinalDeleted,),
    d.FileDocument: (d.DocumentFiled, d.FilingFailed),
    d.DeleteFiledDocument: (d.FiledDocumentDeleted,),
    d.UpdateMasterIndex: (d.MasterIndexUpdated, d.MasterIndexUpdateFailed),
    d.RestorePreviousVersion: (d.PreviousVersionRestored,),
}


def command_answered_by(reply: type[ReplyEvent]) -> type[Command]:
    """The command a reply type answers (each reply answers exactly one)."""
    for command, replies in REPLIES.items():
        if reply in replies:
            return command
    raise LookupError(f"{reply.message_type} answers no command")
