"""The document approval saga: draft -> tiered approvals -> final -> filing -> master index.

  draft_pending --DraftGenerated--> awaiting_approval --all roles approved--> approved
      (auto band: straight to approved)   |  SLA timer: EscalateApproval -> escalated
  approved --ApprovalDecisionRecorded--> generating_final --FinalGenerated--> filing
      --DocumentFiled--> updating_master_index --MasterIndexUpdated--> completed

Where the data comes from: the change event carries the generator's quality score; the documents
worker owns the approval tiers table and answers GenerateDraft with the draft version, the tier
(its SLA, escalation window and full role chain) and whether the content is sensitive. The saga
routes on that reply alone (documents_rules: auto / single approver / full chain), so deciding
stays pure and tiers change with a table edit, not a deploy.

Approvals are plain events (ApprovalGranted / ApprovalRejected, one answer per role). The saga
moves on once every required role approved; the first rejection from a required role rejects.
Answers from roles not required, repeated answers of a role, and answers after the decision are
recorded in history and ignored. Approvals count in `escalated` exactly as before escalation.

Deadlines: the tier's SLA timer starts on entering awaiting_approval and is cancelled by the last
approval. When it fires, EscalateApproval goes to the approvals worker and the saga waits in
`escalated` for the tier's escalation window; when that second deadline passes as well, the change
is rejected (compensated, ending in `rejected` with the reason "no decision by the escalation
deadline"): an unowned change must not sit in the queue for ever, and rejecting is the safe side.

Compensation (last in, first out): GenerateDraft <-> DeleteDraft, ReserveApprover <->
ReleaseApprover (one per required role, pushed when the request is sent: the release voids a
request that had not been recorded yet), GenerateFinal <-> DeleteFinal, FileDocument <->
DeleteFiledDocument, UpdateMasterIndex <-> RestorePreviousVersion. A rejection ends in `rejected`,
a failing later step (or a step timeout) in `failed`. RecordApprovalDecision has no undo: it
records a fact (the change was approved) that stays true when a later step fails.

Replies that only confirm bookkeeping (ApproverReserved, ApprovalEscalated) may arrive in any
later state; they are taken as self-transitions so the saga stops waiting for them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel

from contracts import documents as msg
from contracts.base import Command, Event
from orchestrator.engine import Machine, StepContext, Timer
from orchestrator.workflows import documents_rules as rules


class DocumentState(StrEnum):
    DRAFT_PENDING = "draft_pending"
    AWAITING_APPROVAL = "awaiting_approval"
    ESCALATED = "escalated"
    APPROVED = "approved"
    GENERATING_FINAL = "generating_final"
    FILING = "filing"
    UPDATING_MASTER_INDEX = "updating_master_index"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    COMPENSATION_FAILED = "compensation_failed"
    ABORTED = "aborted"


class DocumentData(BaseModel):
    document_id: str
    change_id: str
    title: str
    metadata: msg.DocumentMetadata
    quality_score: float
    draft_version: int | None = None
    tier: int | None = None
    sla_hours: int | None = None
    escalation_hours: int | None = None
    tier_roles: tuple[str, ...] = ()
    sensitive: bool = False
    route: msg.Route | None = None
    required_roles: tuple[str, ...] = ()
    signoffs: tuple[msg.Signoff, ...] = ()
    """Approvals that counted, in arrival order (with their comments: the audit trail)."""
    rejected_by: msg.Signoff | None = None
    escalated: bool = False
    final_version: int | None = None
    location: str | None = None
    index_version: int | None = None


Ctx = StepContext[DocumentState, DocumentData]
S = DocumentState
STEP_TIMEOUT = Timer("step-timeout")
APPROVAL_SLA = Timer("approval-sla")
ESCALATION_DEADLINE = Timer("escalation-deadline")
TIMERS = (STEP_TIMEOUT, APPROVAL_SLA, ESCALATION_DEADLINE)

machine: Machine[DocumentState, DocumentData] = Machine(
    "documents",
    states=DocumentState,
    data=DocumentData,
    final=[S.COMPLETED, S.REJECTED, S.FAILED],
    compensating=S.COMPENSATING,
    compensation_failed=S.COMPENSATION_FAILED,
    aborted=S.ABORTED,
    # Raise with every change of states, edges, timers or compensations (README: Changing a
    # workflow); the snapshot in versions/ fails its test until then.
    version=1,
)
machine.compensation(msg.DeleteDraft, confirmed_by=msg.DraftDeleted)
machine.compensation(msg.ReleaseApprover, confirmed_by=msg.ApproverReleased)
machine.compensation(msg.DeleteFinal, confirmed_by=msg.FinalDeleted)
machine.compensation(msg.DeleteFiledDocument, confirmed_by=msg.FiledDocumentDeleted)
machine.compensation(msg.RestorePreviousVersion, confirmed_by=msg.PreviousVersionRestored)
machine.compensates_to(S.FAILED, S.REJECTED)


def business_key(document_id: str, change_id: str) -> str:
    return f"{document_id}:{change_id}"


def _ids(ctx: Ctx) -> dict[str, str]:
    return {"document_id": ctx.data.document_id, "change_id": ctx.data.change_id}


def _undo(ctx: Ctx, then: DocumentState, reason: str) -> None:
    for timer in TIMERS:
        ctx.cancel_timer(timer.name)
    ctx.compensate(then=then, reason=reason)


def _send_step(ctx: Ctx, command: Command) -> None:
    ctx.send(command)
    ctx.schedule(STEP_TIMEOUT.name, ctx.config.step_timeout)


# --- start and draft -------------------------------------------------------------------------


def _detected(ctx: Ctx, event: msg.DocumentChangeDetected) -> None:
    _send_step(
        ctx,
        msg.GenerateDraft(
            **_ids(ctx),
            title=event.title,
            metadata=event.metadata,
            quality_score=event.quality_score,
        ),
    )


machine.start(
    msg.DocumentChangeDetected,
    key=lambda e: business_key(e.document_id, e.change_id),
    init=lambda e: DocumentData(
        document_id=e.document_id,
        change_id=e.change_id,
        title=e.title,
        metadata=e.metadata,
        quality_score=e.quality_score,
    ),
    to=S.DRAFT_PENDING,
    do=_detected,
)


def _draft_generated(ctx: Ctx, event: msg.DraftGenerated) -> None:
    data = ctx.data
    data.draft_version = event.draft_version
    data.tier = event.tier
    data.sla_hours = event.sla_hours
    data.escalation_hours = event.escalation_hours
    data.tier_roles = event.tier_roles
    data.sensitive = event.sensitive
    data.quality_score = event.quality_score
    data.route = rules.route_for(event.quality_score, event.sensitive)
    data.required_roles = rules.required_roles(data.route, event.tier_roles)
    ctx.push_compensation(msg.DeleteDraft(**_ids(ctx)))
    ctx.note(f"tier {event.tier}, route {data.route}")
    if not data.required_roles:
        _record_decision(ctx)
        return
    ctx.cancel_timer(STEP_TIMEOUT.name)
    respond_by = ctx.now + timedelta(hours=event.sla_hours)
    for role in data.required_roles:
        ctx.send(
            msg.ReserveApprover(**_ids(ctx), role=role, tier=event.tier, respond_by=respond_by)
        )
        # Pushed with the request, not on its reply: a rejection may overtake the reply, and the
        # release then voids a request the approvals worker has not recorded yet.
        ctx.push_compensation(msg.ReleaseApprover(**_ids(ctx), role=role))
    ctx.schedule(APPROVAL_SLA.name, timedelta(hours=event.sla_hours))
    ctx.goto(S.AWAITING_APPROVAL)


def _draft_failed(ctx: Ctx, event: msg.DraftGenerationFailed) -> None:
    ctx.cancel_timer(STEP_TIMEOUT.name)
    ctx.goto(S.FAILED, reason=f"draft generation failed: {event.reason}")


# --- approvals -------------------------------------------------------------------------------


def _record_decision(ctx: Ctx) -> None:
    assert ctx.data.route is not None
    for timer in (APPROVAL_SLA, ESCALATION_DEADLINE):
        ctx.cancel_timer(timer.name)
    _send_step(
        ctx,
        msg.RecordApprovalDecision(**_ids(ctx), route=ctx.data.route, signoffs=ctx.data.signoffs),
    )
    ctx.goto(S.APPROVED)


def _answer_counts(ctx: Ctx, event: msg.ApprovalGranted | msg.ApprovalRejected) -> bool:
    """False (and the step is ignored) when this answer decides nothing."""
    if (event.document_id, event.change_id) != (ctx.data.document_id, ctx.data.change_id):
        ctx.ignore("answer names another document change")
        return False
    answer = rules.classify_answer(event.role, ctx.data.required_roles, ctx.data.signoffs)
    if answer is not rules.Answer.COUNTS:
        ctx.ignore(f"{type(event).__name__} from {event.role} ignored: {answer.value}")
        return False
    return True


def _signoff(event: msg.ApprovalGranted | msg.ApprovalRejected) -> msg.Signoff:
    return msg.Signoff(role=event.role, approver=event.approver, comment=event.comment)


def _granted(ctx: Ctx, event: msg.ApprovalGranted) -> None:
    if not _answer_counts(ctx, event):
        return
    ctx.data.signoffs = (*ctx.data.signoffs, _signoff(event))
    pending = rules.pending_roles(ctx.data.required_roles, ctx.data.signoffs)
    if not pending:
        _record_decision(ctx)
        return
    assert ctx.state is not None
    ctx.note(f"approved by {event.role}; waiting for {', '.join(pending)}")
    ctx.goto(ctx.state)


def _rejected(ctx: Ctx, event: msg.ApprovalRejected) -> None:
    if not _answer_counts(ctx, event):
        return
    ctx.data.rejected_by = _signoff(event)
    _undo(ctx, S.REJECTED, f"rejected by {event.role}")


def _sla_expired(ctx: Ctx, _: None) -> None:
    data = ctx.data
    assert data.tier is not None
    assert data.escalation_hours is not None
    window = timedelta(hours=data.escalation_hours)
    data.escalated = True
    pending = rules.pending_roles(data.required_roles, data.signoffs)
    ctx.send(
        msg.EscalateApproval(
            **_ids(ctx), tier=data.tier, pending_roles=pending, decide_by=ctx.now + window
        )
    )
    ctx.schedule(ESCALATION_DEADLINE.name, window)
    ctx.note(f"SLA of tier {data.tier} passed; escalated, waiting for {', '.join(pending)}")


def _escalation_expired(ctx: Ctx, _: None) -> None:
    _undo(ctx, S.REJECTED, "no decision by the escalation deadline")


def _bookkeeping(ctx: Ctx, reply: msg.ApproverReserved | msg.ApprovalEscalated) -> None:
    ctx.note(f"{type(reply).__name__} confirmed")


# --- final, filing, master index -------------------------------------------------------------


def _decision_recorded(ctx: Ctx, _: msg.ApprovalDecisionRecorded) -> None:
    assert ctx.data.draft_version is not None
    _send_step(ctx, msg.GenerateFinal(**_ids(ctx), draft_version=ctx.data.draft_version))


def _final_generated(ctx: Ctx, event: msg.FinalGenerated) -> None:
    ctx.data.final_version = event.final_version
    ctx.push_compensation(msg.DeleteFinal(**_ids(ctx)))
    _send_step(ctx, msg.FileDocument(**_ids(ctx), final_version=event.final_version))


def _filed(ctx: Ctx, event: msg.DocumentFiled) -> None:
    assert ctx.data.final_version is not None
    ctx.data.location = event.location
    ctx.push_compensation(msg.DeleteFiledDocument(**_ids(ctx)))
    _send_step(
        ctx,
        msg.UpdateMasterIndex(
            **_ids(ctx), final_version=ctx.data.final_version, location=event.location
        ),
    )


def _indexed(ctx: Ctx, event: msg.MasterIndexUpdated) -> None:
    ctx.data.index_version = event.index_version
    ctx.cancel_timer(STEP_TIMEOUT.name)


FailureReply = msg.FinalGenerationFailed | msg.FilingFailed | msg.MasterIndexUpdateFailed


def _step_failed(step: str) -> Callable[[Ctx, FailureReply], None]:
    def action(ctx: Ctx, event: FailureReply) -> None:
        _undo(ctx, S.FAILED, f"{step} failed: {event.reason}")

    return action


UndoCommand = (
    type[msg.DeleteDraft]
    | type[msg.DeleteFinal]
    | type[msg.DeleteFiledDocument]
    | type[msg.RestorePreviousVersion]
)


def _timed_out(step: str, undo_step: UndoCommand | None) -> Callable[[Ctx, None], None]:
    def action(ctx: Ctx, _: None) -> None:
        # The step may have taken effect without its reply arriving: undo it too. The worker
        # keeps a void marker, so the undo also fences a late execution of the step.
        if undo_step is not None:
            ctx.push_compensation(undo_step(**_ids(ctx)))
        _undo(ctx, S.FAILED, f"{step} timed out")

    return action


# --- end states ------------------------------------------------------------------------------


def _completed(ctx: Ctx, _: object) -> None:
    data = ctx.data
    assert data.final_version is not None
    assert data.location is not None
    ctx.publish(
        msg.DocumentApprovalCompleted(
            **_ids(ctx),
            final_version=data.final_version,
            location=data.location,
            index_version=data.index_version,
        )
    )


def _ended_without_completing(outcome: DocumentState) -> Callable[[Ctx, object], None]:
    def action(ctx: Ctx, _: object) -> None:
        reason = ctx.reason or outcome.value
        ctx.publish(
            msg.DocumentApprovalFailed(**_ids(ctx), outcome=outcome.value, reason=reason[:200])
        )

    return action


# --- the table -------------------------------------------------------------------------------

undo = S.COMPENSATING
DECIDING = (S.AWAITING_APPROVAL, S.ESCALATED)
AFTER_DECISION = (S.APPROVED, S.GENERATING_FINAL, S.FILING, S.UPDATING_MASTER_INDEX)
ACTIVE = (S.DRAFT_PENDING, *DECIDING, *AFTER_DECISION)

machine.on(
    S.DRAFT_PENDING,
    msg.DraftGenerated,
    to=(S.AWAITING_APPROVAL, S.APPROVED),
    do=_draft_generated,
)
machine.on(S.DRAFT_PENDING, msg.DraftGenerationFailed, to=S.FAILED, do=_draft_failed)
machine.on(S.DRAFT_PENDING, STEP_TIMEOUT, to=undo, do=_timed_out("draft", msg.DeleteDraft))

for _state in DECIDING:
    machine.on(_state, msg.ApprovalGranted, to=(_state, S.APPROVED), do=_granted)
    machine.on(_state, msg.ApprovalRejected, to=undo, do=_rejected)
machine.on(S.AWAITING_APPROVAL, APPROVAL_SLA, to=S.ESCALATED, do=_sla_expired)
machine.on(S.ESCALATED, ESCALATION_DEADLINE, to=undo, do=_escalation_expired)

machine.on(S.APPROVED, msg.ApprovalDecisionRecorded, to=S.GENERATING_FINAL, do=_decision_recorded)
machine.on(S.APPROVED, STEP_TIMEOUT, to=undo, do=_timed_out("recording the decision", None))
machine.on(S.GENERATING_FINAL, msg.FinalGenerated, to=S.FILING, do=_final_generated)
machine.on(
    S.GENERATING_FINAL, msg.FinalGenerationFailed, to=undo, do=_step_failed("final generation")
)
machine.on(
    S.GENERATING_FINAL, STEP_TIMEOUT, to=undo, do=_timed_out("final generation", msg.DeleteFinal)
)
machine.on(S.FILING, msg.DocumentFiled, to=S.UPDATING_MASTER_INDEX, do=_filed)
machine.on(S.FILING, msg.FilingFailed, to=undo, do=_step_failed("filing"))
machine.on(S.FILING, STEP_TIMEOUT, to=undo, do=_timed_out("filing", msg.DeleteFiledDocument))
machine.on(S.UPDATING_MASTER_INDEX, msg.MasterIndexUpdated, to=S.COMPLETED, do=_indexed)
machine.on(
    S.UPDATING_MASTER_INDEX,
    msg.MasterIndexUpdateFailed,
    to=undo,
    do=_step_failed("master index update"),
)
machine.on(
    S.UPDATING_MASTER_INDEX,
    STEP_TIMEOUT,
    to=undo,
    do=_timed_out("master index update", msg.RestorePreviousVersion),
)

# Bookkeeping replies: wherever one may still be outstanding, take it so the saga stops
# waiting for it (an operator's `compensate` refuses while a command is in flight).
for _state in (*DECIDING, *AFTER_DECISION):
    machine.on(_state, msg.ApproverReserved, to=_state, do=_bookkeeping)
for _state in (S.ESCALATED, *AFTER_DECISION):
    machine.on(_state, msg.ApprovalEscalated, to=_state, do=_bookkeeping)

machine.ignore(ACTIVE, msg.DocumentChangeDetected, why="duplicate change notification")
machine.ignore(
    S.DRAFT_PENDING, msg.ApprovalGranted, msg.ApprovalRejected, why="no approval requested yet"
)
machine.ignore(
    AFTER_DECISION,
    msg.ApprovalGranted,
    msg.ApprovalRejected,
    why="late answer: the approval decision is already made",
)
machine.ignore(S.DRAFT_PENDING, msg.ApproverReserved, msg.ApprovalEscalated, why="not requested")
machine.ignore(S.AWAITING_APPROVAL, msg.ApprovalEscalated, why="not escalated")
machine.ignore(DECIDING, STEP_TIMEOUT, why="no worker step in flight while approvals are open")
machine.ignore(
    [s for s in ACTIVE if s is not S.AWAITING_APPROVAL], APPROVAL_SLA, why="no SLA running"
)
machine.ignore(
    [s for s in ACTIVE if s is not S.ESCALATED], ESCALATION_DEADLINE, why="not escalated"
)

# Replies of another step. The engine already fences replies to commands it does not await, so
# these can only be operator re-sends; they are recorded and change nothing.
_replies_of: dict[DocumentState, tuple[type[Event], ...]] = {
    S.DRAFT_PENDING: (msg.DraftGenerated, msg.DraftGenerationFailed),
    S.APPROVED: (msg.ApprovalDecisionRecorded,),
    S.GENERATING_FINAL: (msg.FinalGenerated, msg.FinalGenerationFailed),
    S.FILING: (msg.DocumentFiled, msg.FilingFailed),
    S.UPDATING_MASTER_INDEX: (msg.MasterIndexUpdated, msg.MasterIndexUpdateFailed),
}
for _state in ACTIVE:
    _others = [r for s, rs in _replies_of.items() if s is not _state for r in rs]
    machine.ignore(_state, *_others, why="reply of another step")

machine.on_enter(S.COMPLETED, _completed)
for _end in (S.REJECTED, S.FAILED, S.COMPENSATION_FAILED, S.ABORTED):
    machine.on_enter(_end, _ended_without_completing(_end))
machine.validate()
