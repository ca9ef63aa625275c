"""The document approval workflow: draft -> tiered human approvals -> final -> filing -> index.

A document id names a document; a change id names one change of it. One saga runs per
(document, change), so the same document goes through approval again for its next change. Both
ids are restricted to `[A-Za-z0-9_.-]`, which keeps `document:change` an unambiguous business key.

Approvals are plain events published by people (through `sagaline approve` / `reject` or any
service), correlated to the saga id; they are not replies to a command and are not fenced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.base import Command, Event, LongText, ReplyEvent, ShortText

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")]
Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""An approver role as named in the approval tiers table, e.g. `data_steward`."""
ObjectType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""What the document describes: `schema`, `table`, `view`, `procedure`, … (free: tiers match it)."""
QualityScore = Annotated[float, Field(ge=0.0, le=1.0)]
TierNumber = Annotated[int, Field(ge=1, le=99)]
Hours = Annotated[int, Field(ge=1, le=100_000)]
Version = Annotated[int, Field(ge=1, le=2_147_483_647)]
Roles = Annotated[tuple[Role, ...], Field(min_length=1, max_length=20)]

Route = Literal["auto", "single", "full"]
"""Confidence routing: auto-approve, one approver, or the tier's full chain."""

FailureDrill = Literal["draft", "final", "filing", "index"]
"""Documented test switch (like payments' `tok_declined`): the documents worker refuses this step
for the document as a business rule, so tests and demos can fail any step on purpose."""


class DocumentMetadata(BaseModel):
    """What the change detector knows about the document; the approval tier follows from it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    object_type: ObjectType
    contains_pii: bool = False
    contains_financial: bool = False
    critical_system: bool = False
    failure_drill: FailureDrill | None = None


class Signoff(BaseModel):
    """One role's answer: who answered for the role, and what they said."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    role: Role
    approver: ShortText
    comment: LongText = ""


Signoffs = Annotated[tuple[Signoff, ...], Field(max_length=20)]


# --- events from outside (start, human answers) ------------------------------------------------


class DocumentChangeDetected(Event):
    document_id: Identifier
    change_id: Identifier
    title: ShortText
    metadata: DocumentMetadata
    quality_score: QualityScore
    """The generator's confidence in the documentation it produced (0..1): confidence routing."""


class ApprovalGranted(Event):
    document_id: Identifier
    change_id: Identifier
    role: Role
    approver: ShortText
    comment: LongText = ""


class ApprovalRejected(Event):
    document_id: Identifier
    change_id: Identifier
    role: Role
    approver: ShortText
    comment: LongText = ""


# --- events the orchestrator publishes -----------------------------------------------------------


class DocumentApprovalCompleted(Event):
    document_id: Identifier
    change_id: Identifier
    final_version: Version
    location: ShortText
    index_version: Version | None
    """None only when an operator skipped the master index update."""


class DocumentApprovalFailed(Event):
    document_id: Identifier
    change_id: Identifier
    outcome: ShortText
    reason: ShortText


# --- documents worker: drafts ------------------------------------------------------------------


class GenerateDraft(Command):
    document_id: Identifier
    change_id: Identifier
    title: ShortText
    metadata: DocumentMetadata
    quality_score: QualityScore


class DraftGenerated(ReplyEvent):
    """The draft, and the approval tier the worker's tiers table assigns to the document."""

    document_id: Identifier
    change_id: Identifier
    draft_version: Version
    tier: TierNumber
    sla_hours: Hours
    escalation_hours: Hours
    tier_roles: Roles
    """The tier's full approval chain, most senior role last."""
    quality_score: QualityScore
    sensitive: bool


class DraftGenerationFailed(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    reason: ShortText


class DeleteDraft(Command):
    document_id: Identifier
    change_id: Identifier


class DraftDeleted(ReplyEvent):
    document_id: Identifier
    change_id: Identifier


# --- approvals worker --------------------------------------------------------------------------


class ReserveApprover(Command):
    """Open an approval request for one role (the role's approver is held for this change)."""

    document_id: Identifier
    change_id: Identifier
    role: Role
    tier: TierNumber
    respond_by: datetime


class ApproverReserved(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    role: Role
    open: bool
    """False when the request had been released before it was recorded: it stays closed."""


class ReleaseApprover(Command):
    document_id: Identifier
    change_id: Identifier
    role: Role


class ApproverReleased(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    role: Role


class EscalateApproval(Command):
    document_id: Identifier
    change_id: Identifier
    tier: TierNumber
    pending_roles: Roles
    decide_by: datetime
    """The second deadline: without a decision by then the change is rejected."""


class ApprovalEscalated(ReplyEvent):
    document_id: Identifier
    change_id: Identifier


class RecordApprovalDecision(Command):
    """Close the change's approval requests as approved and keep who signed off."""

    document_id: Identifier
    change_id: Identifier
    route: Route
    signoffs: Signoffs


class ApprovalDecisionRecorded(ReplyEvent):
    document_id: Identifier
    change_id: Identifier


# --- documents worker: final, library, master index ---------------------------------------------


class GenerateFinal(Command):
    document_id: Identifier
    change_id: Identifier
    draft_version: Version


class FinalGenerated(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    final_version: Version


class FinalGenerationFailed(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    reason: ShortText


class DeleteFinal(Command):
    document_id: Identifier
    change_id: Identifier


class FinalDeleted(ReplyEvent):
    document_id: Identifier
    change_id: Identifier


class FileDocument(Command):
    document_id: Identifier
    change_id: Identifier
    final_version: Version


class DocumentFiled(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    location: ShortText


class FilingFailed(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    reason: ShortText


class DeleteFiledDocument(Command):
    document_id: Identifier
    change_id: Identifier


class FiledDocumentDeleted(ReplyEvent):
    document_id: Identifier
    change_id: Identifier


class UpdateMasterIndex(Command):
    document_id: Identifier
    change_id: Identifier
    final_version: Version
    location: ShortText


class MasterIndexUpdated(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    index_version: Version


class MasterIndexUpdateFailed(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    reason: ShortText


class RestorePreviousVersion(Command):
    """Return the document's master index entry to the version before this change's update."""

    document_id: Identifier
    change_id: Identifier


class PreviousVersionRestored(ReplyEvent):
    document_id: Identifier
    change_id: Identifier
    index_version: Version | None
    """The entry's version now (None: the document has no entry, as before the update)."""
