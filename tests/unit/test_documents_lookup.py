"""Building approval answers for the CLI from a document saga row (the pure part of the lookup)."""

from __future__ import annotations

import uuid

import pytest

from contracts.documents import ApprovalGranted, ApprovalRejected
from orchestrator.documents_lookup import DocumentLookupError, DocumentSaga, answer
from tests.unit.test_documents_support import DBA, STEWARD, S, doc_data

SAGA = uuid.UUID("d0c00000-0000-4000-8000-000000000001")


def _saga(state: S = S.AWAITING_APPROVAL, signoffs: tuple[str, ...] = ()) -> DocumentSaga:
    data = doc_data(state, signoffs=signoffs).model_dump(mode="json")
    return DocumentSaga.from_row(SAGA, state.value, data)


def test_from_row_reads_ids_and_pending_roles() -> None:
    saga = _saga(signoffs=(STEWARD,))
    assert (saga.document_id, saga.change_id) == ("doc-1", "chg-1")
    assert saga.required_roles == (STEWARD, DBA)
    assert saga.pending_roles == (DBA,)
    assert saga.accepts_answers


@pytest.mark.parametrize(
    ("state", "accepts"),
    [(S.DRAFT_PENDING, False), (S.AWAITING_APPROVAL, True), (S.ESCALATED, True), (S.FILING, False)],
)
def test_only_deciding_states_accept_answers(state: S, accepts: bool) -> None:
    assert _saga(state).accepts_answers is accepts


def test_answers_are_correlated_to_the_saga() -> None:
    saga = _saga()
    granted = answer(saga, role=DBA, approver="bob", granted=True)
    rejected = answer(saga, role=DBA, approver="bob", comment="no", granted=False)

    assert granted.correlation_id == rejected.correlation_id == SAGA
    assert granted.payload == ApprovalGranted(
        document_id="doc-1", change_id="chg-1", role=DBA, approver="bob"
    )
    assert isinstance(rejected.payload, ApprovalRejected)
    assert rejected.payload.comment == "no"
    assert granted.message_id != rejected.message_id


def test_an_invalid_answer_is_reported_without_its_values() -> None:
    with pytest.raises(DocumentLookupError) as caught:
        answer(_saga(), role="Not A Role!", approver="secret-name", granted=True)
    assert "role" in str(caught.value)
    assert "Not A Role!" not in str(caught.value)
    assert "secret-name" not in str(caught.value)
