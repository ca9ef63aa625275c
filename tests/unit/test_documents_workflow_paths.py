"""Whole document sagas through the pure decider: each band, rejection, failure, deadlines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import documents as msg
from orchestrator.engine import Outcome
from tests.unit.decider_support import NOW
from tests.unit.test_documents_support import (
    DBA,
    HIGH,
    LOW,
    SINGLE,
    STEWARD,
    DocRun,
    S,
)

FORWARD_AFTER_DECISION = ["GenerateFinal", "FileDocument", "UpdateMasterIndex"]


def _finish_after_decision(run: DocRun) -> None:
    run.answer(msg.ApprovalDecisionRecorded)
    run.answer(msg.FinalGenerated)
    run.answer(msg.DocumentFiled)
    run.answer(msg.MasterIndexUpdated)


def _reserved(run: DocRun, *roles: str) -> None:
    for role in roles:
        run.answer(msg.ApproverReserved, role=role)


@pytest.mark.parametrize(
    ("score", "sensitive", "required"),
    [
        (LOW, False, (STEWARD, DBA)),
        (SINGLE, False, (DBA,)),
        (HIGH, True, (DBA,)),
        (HIGH, False, ()),
    ],
    ids=["full chain", "single approver", "sensitive: single approver", "auto-approved"],
)
def test_each_band_completes_once_its_required_roles_approve(
    score: float, sensitive: bool, required: tuple[str, ...]
) -> None:
    run = DocRun()
    run.begin(quality_score=score)
    run.answer(msg.DraftGenerated, quality_score=score, sensitive=sensitive)
    _reserved(run, *required)
    for role in required:
        assert run.state == S.AWAITING_APPROVAL
        run.approve(role)
    assert run.state == S.APPROVED
    _finish_after_decision(run)

    assert run.state == S.COMPLETED
    reserves = ["ReserveApprover"] * len(required)
    assert run.command_types() == [
        "GenerateDraft",
        *reserves,
        "RecordApprovalDecision",
        *FORWARD_AFTER_DECISION,
    ]
    decision = run.last_command(msg.RecordApprovalDecision)
    assert decision is not None
    assert isinstance(decision.message, msg.RecordApprovalDecision)
    assert [s.role for s in decision.message.signoffs] == list(required)
    assert run.published() == ["DocumentApprovalCompleted"]
    assert run.timers == {}


def test_a_rejection_releases_approvers_then_deletes_the_draft() -> None:
    run = DocRun()
    run.begin()
    run.answer(msg.DraftGenerated)
    run.approve(STEWARD)
    run.reject(DBA)

    assert run.confirm_all() == [
        f"ReleaseApprover:{DBA}",
        f"ReleaseApprover:{STEWARD}",
        "DeleteDraft",
    ]
    assert run.state == S.REJECTED
    assert run.published() == ["DocumentApprovalFailed(rejected)"]
    assert run.runtime.reason == f"rejected by {DBA}"


def test_a_failure_after_filing_undoes_every_step_newest_first() -> None:
    run = DocRun()
    run.begin()
    run.answer(msg.DraftGenerated)
    _reserved(run, STEWARD, DBA)
    run.approve(STEWARD)
    run.approve(DBA)
    run.answer(msg.ApprovalDecisionRecorded)
    run.answer(msg.FinalGenerated)
    run.answer(msg.DocumentFiled)
    run.answer(msg.MasterIndexUpdateFailed)

    assert run.confirm_all() == [
        "DeleteFiledDocument",
        "DeleteFinal",
        f"ReleaseApprover:{DBA}",
        f"ReleaseApprover:{STEWARD}",
        "DeleteDraft",
    ]
    assert run.state == S.FAILED
    assert run.published() == ["DocumentApprovalFailed(failed)"]


def test_a_timed_out_index_update_is_restored_first() -> None:
    run = DocRun()
    run.begin(quality_score=HIGH)
    run.answer(msg.DraftGenerated, quality_score=HIGH)
    run.answer(msg.ApprovalDecisionRecorded)
    run.answer(msg.FinalGenerated)
    run.answer(msg.DocumentFiled)
    run.fire("step-timeout")

    assert run.confirm_all() == [
        "RestorePreviousVersion",
        "DeleteFiledDocument",
        "DeleteFinal",
        "DeleteDraft",
    ]
    assert run.state == S.FAILED


def test_after_the_sla_the_saga_escalates_and_approvals_still_count() -> None:
    run = DocRun()
    run.begin()
    run.answer(msg.DraftGenerated)
    run.approve(STEWARD)
    escalation = run.fire("approval-sla")

    assert escalation.to_state == S.ESCALATED
    command = run.last_command(msg.EscalateApproval)
    assert command is not None
    assert isinstance(command.message, msg.EscalateApproval)
    assert command.message.pending_roles == (DBA,)
    assert set(run.timers) == {"escalation-deadline"}
    assert run.timers["escalation-deadline"].due_at == NOW + timedelta(hours=48 + 24)

    run.approve(DBA)
    assert run.state == S.APPROVED
    run.answer(msg.ApprovalEscalated)  # the bookkeeping reply arrives after the decision
    assert run.state == S.APPROVED
    _finish_after_decision(run)
    assert run.state == S.COMPLETED
    assert run.data.escalated is True


def test_no_decision_by_the_escalation_deadline_rejects() -> None:
    run = DocRun()
    run.begin()
    run.answer(msg.DraftGenerated)
    run.fire("approval-sla")
    run.fire("escalation-deadline")

    assert run.confirm_all() == [
        f"ReleaseApprover:{DBA}",
        f"ReleaseApprover:{STEWARD}",
        "DeleteDraft",
    ]
    assert run.state == S.REJECTED
    assert run.runtime.reason == "no decision by the escalation deadline"


def test_the_last_approval_cancels_the_sla_timer() -> None:
    run = DocRun()
    run.begin()
    run.answer(msg.DraftGenerated, quality_score=SINGLE)
    assert set(run.timers) == {"approval-sla"}
    run.approve(DBA)
    assert set(run.timers) == {"step-timeout"}


def test_late_and_repeated_answers_are_recorded_and_change_nothing() -> None:
    run = DocRun()
    run.begin()
    run.answer(msg.DraftGenerated)
    run.approve(STEWARD)
    version = run.snapshot.version if run.snapshot else 0

    assert run.approve(STEWARD).outcome is Outcome.IGNORED
    assert run.reject(STEWARD).outcome is Outcome.IGNORED
    assert run.approve("compliance").outcome is Outcome.IGNORED
    assert run.snapshot is not None and run.snapshot.version == version

    run.approve(DBA)
    _finish_after_decision(run)
    assert run.approve(DBA).outcome is Outcome.FINISHED
