"""The document decider as a given-event / expect-commands table, one decide() call per row.

Each row: a saga in some state (a tier-2 document: data steward then DBA; route, signoffs and
compensation stack as the row says; it waits for the command AWAITED), one incoming message or
timer, and everything the decision must contain. Replies cite AWAITED unless the row says
otherwise. The table must take every edge of `machine.edges()` (operator edges are the engine's).
Row ids start with the state: D draft pending, A awaiting approval, E escalated, AP approved,
G generating final, F filing, U updating master index, C compensating.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import pytest

from contracts import documents as msg
from contracts.base import Message, ReplyEvent
from orchestrator.engine import Incoming, OperatorRequest, Outcome, SagaSnapshot, Timer, decide
from orchestrator.workflows.documents import DocumentData, machine
from tests.unit.decider_support import (
    AWAITED,
    CONFIG,
    NOW,
    OTHER,
    incoming_message,
    incoming_operator,
    incoming_timer,
    sent_commands,
    timer_changes,
)
from tests.unit.test_documents_support import (
    COMPLIANCE,
    DBA,
    HIGH,
    SINGLE,
    STACK_IN,
    STEWARD,
    S,
    chain_stack,
    doc_snapshot,
    message,
    published,
    stack_labels,
)

STEP, SLA, ESC, COMP = (
    Timer("step-timeout"),
    Timer("approval-sla"),
    Timer("escalation-deadline"),
    Timer("compensation-step"),
)
SET_STEP, CANCEL_STEP = "set step-timeout", "cancel step-timeout"
SET_SLA, CANCEL_SLA = "set approval-sla", "cancel approval-sla"
SET_ESC, CANCEL_ESC = "set escalation-deadline", "cancel escalation-deadline"
SET_COMP, CANCEL_COMP = "set compensation-step", "cancel compensation-step"
UNDO_TIMERS = {CANCEL_STEP, CANCEL_SLA, CANCEL_ESC, SET_COMP}
DECIDED_TIMERS = {SET_STEP, CANCEL_SLA, CANCEL_ESC}
DUE = {
    "step-timeout": CONFIG.step_timeout,
    "compensation-step": CONFIG.step_timeout,
    "approval-sla": timedelta(hours=48),
    "escalation-deadline": timedelta(hours=24),
}

D, A, E, AP = S.DRAFT_PENDING, S.AWAITING_APPROVAL, S.ESCALATED, S.APPROVED
G, F, U, C = S.GENERATING_FINAL, S.FILING, S.UPDATING_MASTER_INDEX, S.COMPENSATING
DETECTED, GRANTED, REJECTED = msg.DocumentChangeDetected, msg.ApprovalGranted, msg.ApprovalRejected
RESERVED, ESCALATED = msg.ApproverReserved, msg.ApprovalEscalated
ABORT = OperatorRequest("abort", operator="ops@example", reason="document withdrawn")

T, IGNORED, STALE, FINISHED = (
    Outcome.TRANSITIONED,
    Outcome.IGNORED,
    Outcome.STALE,
    Outcome.FINISHED,
)
DRAFT = "DeleteDraft"
REL_STEWARD, REL_DBA = f"ReleaseApprover:{STEWARD}", f"ReleaseApprover:{DBA}"
FINAL, FILED, RESTORE = "DeleteFinal", "DeleteFiledDocument", "RestorePreviousVersion"


@dataclass(frozen=True)
class Row:
    id: str
    state: S | None
    on: type[Message] | Timer | OperatorRequest
    outcome: Outcome
    to: S
    fields: dict[str, Any] = field(default_factory=dict)
    """Overrides of the incoming message's canonical values."""
    route: msg.Route = "full"
    signoffs: tuple[str, ...] | None = None
    stack: tuple[str, ...] | None = None
    """None: what the state implies (STACK_IN)."""
    sends: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    timers: Collection[str] = ()
    stack_after: tuple[str, ...] | None = None
    """None: the stack is unchanged."""
    ends_as: S | None = None
    """The final state a compensation in progress will end in."""
    causation: Literal["awaited", "other", "none"] = "awaited"

    @property
    def trigger(self) -> str:
        if isinstance(self.on, OperatorRequest):
            return f"operator:{self.on.action}"
        return self.on.trigger if isinstance(self.on, Timer) else self.on.message_type

    @property
    def edge(self) -> tuple[str | None, str, str] | None:
        if self.outcome not in (Outcome.STARTED, Outcome.TRANSITIONED):
            return None
        return (None if self.state is None else self.state.value, self.trigger, self.to.value)

    @property
    def given_stack(self) -> tuple[str, ...]:
        if self.stack is not None:
            return self.stack
        return STACK_IN.get(self.state, ()) if self.state is not None else ()


def _confirmations() -> list[Row]:
    """Each compensation confirmed: with more below, as the last one ending failed, or rejected."""
    rows = []
    for command, reply, below in (
        (DRAFT, msg.DraftDeleted, ()),
        (REL_STEWARD, msg.ApproverReleased, (DRAFT,)),
        (FINAL, msg.FinalDeleted, chain_stack()),
        (FILED, msg.FiledDocumentDeleted, (*chain_stack(), FINAL)),
        (RESTORE, msg.PreviousVersionRestored, (*chain_stack(), FINAL, FILED)),
    ):
        name = reply.message_type
        fields = {"role": STEWARD} if reply is msg.ApproverReleased else {}
        if below:
            rows.append(
                Row(f"C: {name} -> {below[-1]}", C, reply, T, C, fields=fields,
                    stack=(*below, command), sends=(below[-1].split(":")[0],),
                    timers={SET_COMP}, stack_after=below, ends_as=S.FAILED)
            )  # fmt: skip
        rows.append(
            Row(f"C: {name}, last one -> failed", C, reply, T, S.FAILED, fields=fields,
                stack=(command,), publishes=("DocumentApprovalFailed(failed)",),
                timers={CANCEL_COMP}, stack_after=(), ends_as=S.FAILED)
        )  # fmt: skip
        rows.append(
            Row(f"C: {name}, last one -> rejected", C, reply, T, S.REJECTED, fields=fields,
                stack=(command,), publishes=("DocumentApprovalFailed(rejected)",),
                timers={CANCEL_COMP}, stack_after=(), ends_as=S.REJECTED)
        )  # fmt: skip
    return rows


# fmt: off
ROWS = [
    # --- no saga yet ---------------------------------------------------------------------------
    Row("start: change detected -> GenerateDraft", None, DETECTED, Outcome.STARTED, D,
        sends=("GenerateDraft",), timers={SET_STEP}),
    # --- draft pending -------------------------------------------------------------------------
    Row("D: draft, full chain -> ReserveApprover per role", D, msg.DraftGenerated, T, A,
        sends=("ReserveApprover", "ReserveApprover"), timers={CANCEL_STEP, SET_SLA},
        stack_after=chain_stack()),
    Row("D: draft, single band -> the most senior role only", D, msg.DraftGenerated, T, A,
        fields={"quality_score": SINGLE}, sends=("ReserveApprover",),
        timers={CANCEL_STEP, SET_SLA}, stack_after=(DRAFT, REL_DBA)),
    Row("D: draft, sensitive with a high score -> single approver", D, msg.DraftGenerated, T, A,
        fields={"quality_score": 0.99, "sensitive": True}, sends=("ReserveApprover",),
        timers={CANCEL_STEP, SET_SLA}, stack_after=(DRAFT, REL_DBA)),
    Row("D: draft, auto band -> RecordApprovalDecision", D, msg.DraftGenerated, T, AP,
        fields={"quality_score": HIGH}, sends=("RecordApprovalDecision",),
        timers=DECIDED_TIMERS, stack_after=(DRAFT,)),
    Row("D: draft generation failed -> failed", D, msg.DraftGenerationFailed, T, S.FAILED,
        publishes=("DocumentApprovalFailed(failed)",), timers={CANCEL_STEP}),
    Row("D: step timeout -> DeleteDraft", D, STEP, T, C, sends=(DRAFT,), timers=UNDO_TIMERS,
        stack_after=(DRAFT,), ends_as=S.FAILED),
    Row("D: duplicate change notification", D, DETECTED, IGNORED, D),
    Row("D: approval before any request", D, GRANTED, IGNORED, D),
    Row("D: draft citing another command", D, msg.DraftGenerated, STALE, D, causation="other"),
    Row("D: draft without causation", D, msg.DraftGenerated, STALE, D, causation="none"),
    # --- awaiting approval ---------------------------------------------------------------------
    Row("A: first approval -> wait for the rest", A, GRANTED, T, A),
    Row("A: last approval -> RecordApprovalDecision", A, GRANTED, T, AP, fields={"role": DBA},
        signoffs=(STEWARD,), sends=("RecordApprovalDecision",), timers=DECIDED_TIMERS),
    Row("A: single approver approves -> RecordApprovalDecision", A, GRANTED, T, AP,
        fields={"role": DBA}, route="single", stack=(DRAFT, REL_DBA),
        sends=("RecordApprovalDecision",), timers=DECIDED_TIMERS),
    Row("A: approval from a role not required", A, GRANTED, IGNORED, A,
        fields={"role": COMPLIANCE}),
    Row("A: single band, approval from the junior role", A, GRANTED, IGNORED, A,
        route="single", stack=(DRAFT, REL_DBA)),
    Row("A: duplicate approval of a role", A, GRANTED, IGNORED, A, signoffs=(STEWARD,)),
    Row("A: approval for another change", A, GRANTED, IGNORED, A,
        fields={"change_id": "chg-other"}),
    Row("A: rejection -> release approvers first", A, REJECTED, T, C, sends=("ReleaseApprover",),
        timers=UNDO_TIMERS, ends_as=S.REJECTED),
    Row("A: rejection after another role approved", A, REJECTED, T, C, signoffs=(STEWARD,),
        sends=("ReleaseApprover",), timers=UNDO_TIMERS, ends_as=S.REJECTED),
    Row("A: rejection from a role not required", A, REJECTED, IGNORED, A,
        fields={"role": COMPLIANCE}),
    Row("A: rejection from a role that already approved", A, REJECTED, IGNORED, A,
        fields={"role": STEWARD}, signoffs=(STEWARD,)),
    Row("A: approver reserved", A, RESERVED, T, A),
    Row("A: reservation citing another command", A, RESERVED, STALE, A, causation="other"),
    Row("A: SLA passes -> EscalateApproval", A, SLA, T, E, sends=("EscalateApproval",),
        timers={SET_ESC}),
    Row("A: SLA passes after one approval -> escalate the rest", A, SLA, T, E,
        signoffs=(STEWARD,), sends=("EscalateApproval",), timers={SET_ESC}),
    Row("A: stray step timeout", A, STEP, IGNORED, A),
    Row("A: stray escalation deadline", A, ESC, IGNORED, A),
    Row("A: duplicate change notification", A, DETECTED, IGNORED, A),
    Row("A: operator aborts", A, ABORT, T, S.ABORTED,
        publishes=("DocumentApprovalFailed(aborted)",)),
    # --- escalated: approvals still count ------------------------------------------------------
    Row("E: approval -> wait for the rest", E, GRANTED, T, E),
    Row("E: last approval -> RecordApprovalDecision", E, GRANTED, T, AP, fields={"role": DBA},
        signoffs=(STEWARD,), sends=("RecordApprovalDecision",), timers=DECIDED_TIMERS),
    Row("E: rejection -> compensate to rejected", E, REJECTED, T, C, sends=("ReleaseApprover",),
        timers=UNDO_TIMERS, ends_as=S.REJECTED),
    Row("E: approval from a role not required", E, GRANTED, IGNORED, E,
        fields={"role": COMPLIANCE}),
    Row("E: escalation deadline -> rejected", E, ESC, T, C, sends=("ReleaseApprover",),
        timers=UNDO_TIMERS, ends_as=S.REJECTED),
    Row("E: escalation recorded", E, ESCALATED, T, E),
    Row("E: approver reserved", E, RESERVED, T, E),
    Row("E: stray SLA timer", E, SLA, IGNORED, E),
    # --- approved: the decision is being recorded ----------------------------------------------
    Row("AP: decision recorded -> GenerateFinal", AP, msg.ApprovalDecisionRecorded, T, G,
        sends=("GenerateFinal",), timers={SET_STEP}),
    Row("AP: step timeout -> compensate", AP, STEP, T, C, sends=("ReleaseApprover",),
        timers=UNDO_TIMERS, ends_as=S.FAILED),
    Row("AP: late escalation reply", AP, ESCALATED, T, AP),
    Row("AP: late reservation reply", AP, RESERVED, T, AP),
    Row("AP: late approval", AP, GRANTED, IGNORED, AP),
    Row("AP: late rejection", AP, REJECTED, IGNORED, AP),
    # --- generating final ----------------------------------------------------------------------
    Row("G: final -> FileDocument", G, msg.FinalGenerated, T, F, sends=("FileDocument",),
        timers={SET_STEP}, stack_after=(*chain_stack(), FINAL)),
    Row("G: final failed -> release approvers first", G, msg.FinalGenerationFailed, T, C,
        sends=("ReleaseApprover",), timers=UNDO_TIMERS, ends_as=S.FAILED),
    Row("G: step timeout -> DeleteFinal first", G, STEP, T, C, sends=(FINAL,),
        timers=UNDO_TIMERS, stack_after=(*chain_stack(), FINAL), ends_as=S.FAILED),
    Row("G: late escalation reply", G, ESCALATED, T, G),
    Row("G: late reservation reply", G, RESERVED, T, G),
    Row("G: late approval", G, GRANTED, IGNORED, G),
    # --- filing --------------------------------------------------------------------------------
    Row("F: filed -> UpdateMasterIndex", F, msg.DocumentFiled, T, U,
        sends=("UpdateMasterIndex",), timers={SET_STEP},
        stack_after=(*chain_stack(), FINAL, FILED)),
    Row("F: filing failed -> DeleteFinal first", F, msg.FilingFailed, T, C, sends=(FINAL,),
        timers=UNDO_TIMERS, ends_as=S.FAILED),
    Row("F: step timeout -> DeleteFiledDocument first", F, STEP, T, C, sends=(FILED,),
        timers=UNDO_TIMERS, stack_after=(*chain_stack(), FINAL, FILED), ends_as=S.FAILED),
    Row("F: late escalation reply", F, ESCALATED, T, F),
    Row("F: late reservation reply", F, RESERVED, T, F),
    Row("F: final reply re-sent", F, msg.FinalGenerated, IGNORED, F),
    # --- updating the master index -------------------------------------------------------------
    Row("U: indexed -> completed", U, msg.MasterIndexUpdated, T, S.COMPLETED,
        publishes=("DocumentApprovalCompleted",), timers={CANCEL_STEP}),
    Row("U: index update failed -> DeleteFiledDocument first", U, msg.MasterIndexUpdateFailed,
        T, C, sends=(FILED,), timers=UNDO_TIMERS, ends_as=S.FAILED),
    Row("U: step timeout -> RestorePreviousVersion first", U, STEP, T, C, sends=(RESTORE,),
        timers=UNDO_TIMERS, stack_after=(*chain_stack(), FINAL, FILED, RESTORE),
        ends_as=S.FAILED),
    Row("U: late escalation reply", U, ESCALATED, T, U),
    Row("U: late reservation reply", U, RESERVED, T, U),
    Row("U: duplicate change notification", U, DETECTED, IGNORED, U),
    Row("U: operator aborts", U, ABORT, T, S.ABORTED,
        publishes=("DocumentApprovalFailed(aborted)",)),
    # --- compensating --------------------------------------------------------------------------
    *_confirmations(),
    Row("C: a release with more releases below", C, msg.ApproverReleased, T, C,
        fields={"role": DBA}, stack=chain_stack(), sends=("ReleaseApprover",),
        timers={SET_COMP}, stack_after=(DRAFT, REL_STEWARD), ends_as=S.REJECTED),
    # A stack the workflow never builds (DeleteDraft is always at the bottom): the engine pops
    # any stack the same way.
    Row("C: draft deleted, more below -> ReleaseApprover", C, msg.DraftDeleted, T, C,
        stack=(REL_STEWARD, DRAFT), sends=("ReleaseApprover",), timers={SET_COMP},
        stack_after=(REL_STEWARD,), ends_as=S.FAILED),
    Row("C: compensation timeout -> compensation_failed", C, COMP, T, S.COMPENSATION_FAILED,
        stack=chain_stack(), publishes=("DocumentApprovalFailed(compensation_failed)",),
        ends_as=S.REJECTED),
    Row("C: confirmation of another compensation", C, msg.DraftDeleted, IGNORED, C,
        stack=chain_stack(), ends_as=S.REJECTED),
    Row("C: late forward reply", C, msg.FinalGenerated, STALE, C, stack=chain_stack(),
        causation="other", ends_as=S.FAILED),
    Row("C: approval while compensating", C, GRANTED, IGNORED, C, stack=chain_stack(),
        ends_as=S.REJECTED),
    # --- finished sagas record and ignore everything -------------------------------------------
    Row("completed: late approval", S.COMPLETED, GRANTED, FINISHED, S.COMPLETED),
    Row("completed: duplicate change", S.COMPLETED, DETECTED, FINISHED, S.COMPLETED),
    Row("rejected: late approval", S.REJECTED, GRANTED, FINISHED, S.REJECTED),
    Row("failed: late filing reply", S.FAILED, msg.DocumentFiled, FINISHED, S.FAILED),
]
# fmt: on


def given(r: Row) -> SagaSnapshot | None:
    if r.state is None:
        return None
    if r.state is not C:
        return doc_snapshot(r.state, route=r.route, signoffs=r.signoffs, stack=r.given_stack)
    ends_as = r.ends_as or S.FAILED
    reason = "rejected by dba" if ends_as is S.REJECTED else "filing failed: refused"
    return doc_snapshot(
        C, stack=r.given_stack, compensation_target=ends_as, reason=reason, signoffs=r.signoffs
    )


def incoming_for(r: Row) -> Incoming:
    if isinstance(r.on, OperatorRequest):
        return incoming_operator(r.on)
    if isinstance(r.on, Timer):
        return incoming_timer(r.on.name)
    event = message(r.on, **r.fields)
    causation: uuid.UUID | None = None
    if isinstance(event, ReplyEvent):
        causation = {"awaited": AWAITED, "other": OTHER, "none": None}[r.causation]
    return incoming_message(event, causation_id=causation)


@pytest.mark.parametrize("r", ROWS, ids=lambda r: r.id)
def test_document_decider(r: Row) -> None:
    before = given(r)
    incoming = incoming_for(r)

    decision = decide(machine, before, incoming, NOW, CONFIG)

    assert decision.outcome == r.outcome, decision.note
    assert decision.from_state == (None if r.state is None else r.state.value)
    assert decision.to_state == r.to
    assert sent_commands(decision) == list(r.sends)
    assert published(decision) == list(r.publishes)
    assert timer_changes(decision) == set(r.timers)
    expected_stack = r.given_stack if r.stack_after is None else r.stack_after
    assert stack_labels(decision.runtime) == list(expected_stack)
    assert decision.finished == (r.to in machine.final)
    for change in decision.timers:
        if change.due_at is not None:
            assert change.due_at == NOW + DUE[change.name], change.name
            assert change.message_id is not None

    if before is None:
        assert decision.version == 1
        assert decision.business_key == "doc-1:chg-1"
        return
    if not decision.changes_saga:
        assert (decision.version, decision.data, decision.runtime, decision.outgoing) == (
            before.version,
            before.data,
            before.runtime,
            (),
        )
        assert decision.timers == ()
        assert decision.note
        return
    assert decision.version == before.version + 1
    sent = {o.message_id for o in decision.outgoing if o.kind == "command"}
    if decision.finished:
        expected = set()
    elif r.to is C:
        expected = sent  # forward commands in flight are no longer awaited
        assert len(sent) == 1
        assert r.ends_as is not None, "rows into compensating say how it will end"
        assert decision.runtime.compensation_target == r.ends_as
    else:
        expected = (set(before.runtime.outstanding) - {incoming.causation_id}) | sent
    assert decision.runtime.outstanding == expected


@pytest.mark.parametrize(
    "pair", sorted(machine.ignores), ids=[f"{s}: {t}" for s, t in sorted(machine.ignores)]
)
def test_explicitly_ignored_pair_changes_nothing(pair: tuple[str, str]) -> None:
    state, trigger = S(pair[0]), pair[1]
    before = doc_snapshot(state)
    if trigger.startswith("timer:"):
        incoming = incoming_timer(trigger.removeprefix("timer:"))
    else:
        event = message(machine.event_classes[trigger])
        # Cite the awaited command: a stale reply would be fenced before the ignore is consulted.
        causation = AWAITED if isinstance(event, ReplyEvent) else None
        incoming = incoming_message(event, causation_id=causation)

    decision = decide(machine, before, incoming, NOW, CONFIG)

    assert decision.outcome == Outcome.IGNORED
    assert decision.note == machine.ignores[pair].why
    assert (decision.to_state, decision.data, decision.runtime, decision.version) == (
        before.state,
        before.data,
        before.runtime,
        before.version,
    )
    assert (decision.outgoing, decision.timers) == ((), ())


# --- what the rows' decisions carry --------------------------------------------------------------


def _decide(state: S, event: Message, **snapshot: Any) -> DocumentData:
    decision = decide(
        machine,
        doc_snapshot(state, **snapshot),
        incoming_message(event, causation_id=AWAITED),
        NOW,
        CONFIG,
    )
    return DocumentData.model_validate(decision.data)


def test_draft_reply_sets_tier_route_and_required_roles() -> None:
    data = _decide(D, message(msg.DraftGenerated, quality_score=SINGLE))
    assert (data.tier, data.route, data.required_roles) == (2, "single", (DBA,))
    assert data.draft_version == 1


def test_counted_approval_is_kept_with_its_approver() -> None:
    data = _decide(A, message(msg.ApprovalGranted, role=STEWARD, approver="ada", comment="ok"))
    assert [(s.role, s.approver, s.comment) for s in data.signoffs] == [(STEWARD, "ada", "ok")]


def test_a_rejection_keeps_who_rejected_and_why() -> None:
    data = _decide(A, message(msg.ApprovalRejected, role=DBA, approver="bob", comment="no index"))
    assert data.rejected_by == msg.Signoff(role=DBA, approver="bob", comment="no index")


def test_requests_and_escalation_carry_their_deadlines() -> None:
    draft = decide(
        machine,
        doc_snapshot(D),
        incoming_message(message(msg.DraftGenerated), causation_id=AWAITED),
        NOW,
        CONFIG,
    )
    reserves = [o.message for o in draft.outgoing if isinstance(o.message, msg.ReserveApprover)]
    assert [(r.role, r.respond_by) for r in reserves] == [
        (STEWARD, NOW + timedelta(hours=48)),
        (DBA, NOW + timedelta(hours=48)),
    ]
    escalation = decide(
        machine, doc_snapshot(A, signoffs=(STEWARD,)), incoming_timer("approval-sla"), NOW, CONFIG
    )
    (command,) = [o.message for o in escalation.outgoing]
    assert isinstance(command, msg.EscalateApproval)
    assert (command.pending_roles, command.decide_by) == ((DBA,), NOW + timedelta(hours=24))


def test_ignored_answers_say_why_in_history() -> None:
    before = doc_snapshot(A, signoffs=(STEWARD,))
    cases = {
        "role not required": message(msg.ApprovalGranted, role=COMPLIANCE),
        "role already answered": message(msg.ApprovalGranted, role=STEWARD),
        "another document change": message(msg.ApprovalRejected, change_id="chg-2"),
    }
    for why, event in cases.items():
        decision = decide(machine, before, incoming_message(event), NOW, CONFIG)
        assert decision.outcome is Outcome.IGNORED
        assert why in decision.note


# --- every edge has a row ------------------------------------------------------------------------


def _row_edges() -> set[tuple[str | None, str, str]]:
    return {e for r in ROWS if (e := r.edge) is not None}


def test_machine_validates() -> None:
    machine.validate()


def test_every_edge_is_exercised_by_a_row() -> None:
    # Operator actions are the engine's own edges, tested in test_engine_operator.py.
    workflow_edges = {e for e in machine.edges() if not e[1].startswith("operator:")}
    missing = workflow_edges - _row_edges()
    assert not missing, f"transitions without a table row: {sorted(missing, key=str)}"


def test_rows_only_take_declared_edges() -> None:
    assert _row_edges() <= set(machine.edges())
