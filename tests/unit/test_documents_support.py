"""Helpers shared by the document workflow tests: canonical messages, snapshots, a saga driver.

No tests here. The defaults describe a tier-2 document (a table: data steward, then DBA) whose
quality score sends it through the full chain; rows and paths override what they are about.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from contracts import documents as msg
from contracts.base import Command, Message, ReplyEvent
from orchestrator.engine import (
    CompensationEntry,
    Decision,
    Outgoing,
    RuntimeState,
    SagaSnapshot,
)
from orchestrator.workflows import documents_rules as rules
from orchestrator.workflows.documents import DocumentData, DocumentState, machine
from tests.unit.decider_support import AWAITED, SAGA_ID, SagaRun

S = DocumentState
DOC, CHANGE = "doc-1", "chg-1"
IDS = {"document_id": DOC, "change_id": CHANGE}
STEWARD, DBA, COMPLIANCE, LEAD = "data_steward", "dba", "compliance", "governance_lead"
TIER2_ROLES = (STEWARD, DBA)
SLA, ESCALATION = timedelta(hours=48), timedelta(hours=24)
LOW, SINGLE, HIGH = 0.5, 0.85, 0.97
"""Quality scores in the full-chain, single-approver and auto-approve bands."""

TABLE = msg.DocumentMetadata(object_type="table")
LOCATION = f"library/{DOC}/v1"

_FACTORIES: dict[type[Message], dict[str, Any]] = {
    msg.DocumentChangeDetected: {
        "title": "orders table",
        "metadata": TABLE,
        "quality_score": LOW,
    },
    msg.DraftGenerated: {
        "draft_version": 1,
        "tier": 2,
        "sla_hours": 48,
        "escalation_hours": 24,
        "tier_roles": TIER2_ROLES,
        "quality_score": LOW,
        "sensitive": False,
    },
    msg.DraftGenerationFailed: {"reason": "no approval tier matches the document"},
    msg.DraftDeleted: {},
    msg.ApproverReserved: {"role": STEWARD, "open": True},
    msg.ApproverReleased: {"role": DBA},
    msg.ApprovalEscalated: {},
    msg.ApprovalDecisionRecorded: {},
    msg.ApprovalGranted: {"role": STEWARD, "approver": "ada"},
    msg.ApprovalRejected: {"role": DBA, "approver": "bob", "comment": "missing indexes"},
    msg.FinalGenerated: {"final_version": 1},
    msg.FinalGenerationFailed: {"reason": "final generator refused the draft"},
    msg.FinalDeleted: {},
    msg.DocumentFiled: {"location": LOCATION},
    msg.FilingFailed: {"reason": "document library refused the document"},
    msg.FiledDocumentDeleted: {},
    msg.MasterIndexUpdated: {"index_version": 1},
    msg.MasterIndexUpdateFailed: {"reason": "master index refused the update"},
    msg.PreviousVersionRestored: {"index_version": None},
}


def message(kind: type[Message], **overrides: Any) -> Message:
    """A valid instance of a document event with canonical values, changed by `overrides`."""
    return kind(**{**IDS, **_FACTORIES[kind], **overrides})


REPLY_TO: dict[type[ReplyEvent], type[Command]] = {
    msg.DraftGenerated: msg.GenerateDraft,
    msg.DraftGenerationFailed: msg.GenerateDraft,
    msg.DraftDeleted: msg.DeleteDraft,
    msg.ApproverReserved: msg.ReserveApprover,
    msg.ApproverReleased: msg.ReleaseApprover,
    msg.ApprovalEscalated: msg.EscalateApproval,
    msg.ApprovalDecisionRecorded: msg.RecordApprovalDecision,
    msg.FinalGenerated: msg.GenerateFinal,
    msg.FinalGenerationFailed: msg.GenerateFinal,
    msg.FinalDeleted: msg.DeleteFinal,
    msg.DocumentFiled: msg.FileDocument,
    msg.FilingFailed: msg.FileDocument,
    msg.FiledDocumentDeleted: msg.DeleteFiledDocument,
    msg.MasterIndexUpdated: msg.UpdateMasterIndex,
    msg.MasterIndexUpdateFailed: msg.UpdateMasterIndex,
    msg.PreviousVersionRestored: msg.RestorePreviousVersion,
}


# --- compensation stacks as labels: "DeleteDraft", "ReleaseApprover:dba" -----------------------


def label(entry: CompensationEntry) -> str:
    role = entry.payload.get("role")
    return entry.command_type if role is None else f"{entry.command_type}:{role}"


def stack_labels(runtime: RuntimeState) -> list[str]:
    """Bottom of the stack first (the last one runs first)."""
    return [label(e) for e in runtime.compensations]


def entry(text: str) -> CompensationEntry:
    command_type, _, role = text.partition(":")
    payload: dict[str, Any] = {**IDS, **({"role": role} if role else {})}
    return CompensationEntry(command_type, payload, machine.compensations[command_type])


def chain_stack(roles: Iterable[str] = TIER2_ROLES) -> tuple[str, ...]:
    return ("DeleteDraft", *(f"ReleaseApprover:{r}" for r in roles))


STACK_IN: dict[DocumentState, tuple[str, ...]] = {
    S.DRAFT_PENDING: (),
    S.AWAITING_APPROVAL: chain_stack(),
    S.ESCALATED: chain_stack(),
    S.APPROVED: chain_stack(),
    S.GENERATING_FINAL: chain_stack(),
    S.FILING: (*chain_stack(), "DeleteFinal"),
    S.UPDATING_MASTER_INDEX: (*chain_stack(), "DeleteFinal", "DeleteFiledDocument"),
}
"""What a full-chain tier-2 saga has to undo while it waits in each forward state."""

_DECIDED = {S.APPROVED, S.GENERATING_FINAL, S.FILING, S.UPDATING_MASTER_INDEX, S.COMPLETED}


def doc_data(
    state: DocumentState,
    *,
    route: msg.Route = "full",
    signoffs: Iterable[str] | None = None,
) -> DocumentData:
    """Saga data as far as `state` implies; `signoffs` (roles) default to none before the
    decision and to every required role after it."""
    data = DocumentData(
        document_id=DOC, change_id=CHANGE, title="orders table", metadata=TABLE, quality_score=LOW
    )
    if state is S.DRAFT_PENDING:
        return data
    required = rules.required_roles(route, TIER2_ROLES)
    answered = signoffs if signoffs is not None else (required if state in _DECIDED else ())
    data = data.model_copy(
        update={
            "draft_version": 1,
            "tier": 2,
            "sla_hours": 48,
            "escalation_hours": 24,
            "tier_roles": TIER2_ROLES,
            "route": route,
            "required_roles": required,
            "signoffs": tuple(msg.Signoff(role=r, approver=f"{r}-person") for r in answered),
            "escalated": state is S.ESCALATED,
        }
    )
    if state in (S.FILING, S.UPDATING_MASTER_INDEX, S.COMPLETED):
        data = data.model_copy(update={"final_version": 1})
    if state in (S.UPDATING_MASTER_INDEX, S.COMPLETED):
        data = data.model_copy(update={"location": LOCATION})
    return data


def doc_snapshot(
    state: DocumentState,
    *,
    route: msg.Route = "full",
    signoffs: Iterable[str] | None = None,
    stack: Iterable[str] | None = None,
    outstanding: Iterable[uuid.UUID] = (AWAITED,),
    compensation_target: DocumentState | None = None,
    reason: str | None = None,
    version: int = 5,
) -> SagaSnapshot:
    finished = state.value in machine.final
    data = doc_data(state, route=route, signoffs=signoffs)
    if stack is None:
        stack = STACK_IN.get(state, ())
    return SagaSnapshot(
        saga_id=SAGA_ID,
        workflow=machine.name,
        business_key=f"{DOC}:{CHANGE}",
        state=state.value,
        data=data.model_dump(mode="json"),
        runtime=RuntimeState(
            outstanding=frozenset() if finished else frozenset(outstanding),
            compensations=tuple(entry(s) for s in stack),
            compensation_target=None if compensation_target is None else compensation_target.value,
            reason=reason,
        ),
        version=version,
        finished=finished,
    )


# --- reading decisions -------------------------------------------------------------------------


def describe(out: Outgoing) -> str:
    if isinstance(out.message, msg.DocumentApprovalFailed):
        return f"DocumentApprovalFailed({out.message.outcome})"
    return out.message.message_type


def published(decision: Decision) -> list[str]:
    return [describe(o) for o in decision.outgoing if o.kind == "event"]


# --- the driver --------------------------------------------------------------------------------


@dataclass
class DocRun(SagaRun):
    """SagaRun for the document machine: replies answer the latest command of their type."""

    def __post_init__(self) -> None:
        self.machine = machine

    def begin(self, **overrides: Any) -> Decision:
        return self.deliver(message(msg.DocumentChangeDetected, **overrides))

    def answer(self, kind: type[ReplyEvent], **overrides: Any) -> Decision:
        reply = message(kind, **overrides)
        command = self.last_command(REPLY_TO[kind])
        assert command is not None, f"no {REPLY_TO[kind].message_type} was sent"
        return self.deliver(reply, causation_id=command.message_id)

    def approve(self, role: str, **overrides: Any) -> Decision:
        return self.deliver(message(msg.ApprovalGranted, role=role, **overrides))

    def reject(self, role: str, **overrides: Any) -> Decision:
        return self.deliver(message(msg.ApprovalRejected, role=role, **overrides))

    def confirm_all(self) -> list[str]:
        """Confirm each compensation as it is sent; the labels in the order they ran."""
        ran: list[str] = []
        while self.state == S.COMPENSATING:
            top = self.runtime.compensations[-1]
            ran.append(label(top))
            reply = next(r for r in REPLY_TO if r.message_type == top.confirmed_by)
            role = top.payload.get("role")
            self.answer(reply, **({"role": role} if role else {}))
        return ran

    def published(self) -> list[str]:
        return [describe(o) for o in self.events]

    @property
    def data(self) -> DocumentData:
        assert self.snapshot is not None
        return DocumentData.model_validate(self.snapshot.data)
