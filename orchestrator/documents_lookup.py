"""From a document id to its running approval saga, and the answers people send it.

`sagaline approve DOC --role R --by NAME` and `sagaline reject …` stay thin: `answer_for`
resolves the document to its unfinished saga and builds the ApprovalGranted / ApprovalRejected
envelope (correlated to the saga id); the CLI publishes it to the events exchange. The demo uses
the same functions, so it answers approvals exactly as an operator would.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.documents import ApprovalGranted, ApprovalRejected
from contracts.envelope import Envelope, new_envelope
from orchestrator.store.tables import instances
from orchestrator.workflows.documents import DocumentState, business_key, machine
from sagaline.messaging.errors import ReportableError
from sagaline.messaging.parsing import validation_summary

ANSWERING_STATES = frozenset({DocumentState.AWAITING_APPROVAL, DocumentState.ESCALATED})
"""States in which an answer can decide anything (elsewhere it is recorded and ignored)."""


class DocumentLookupError(ReportableError):
    """The document id does not name exactly one unfinished approval (the text says why)."""


@dataclass(frozen=True)
class DocumentSaga:
    saga_id: uuid.UUID
    document_id: str
    change_id: str
    state: str
    required_roles: tuple[str, ...]
    pending_roles: tuple[str, ...]

    @property
    def accepts_answers(self) -> bool:
        return self.state in ANSWERING_STATES

    @classmethod
    def from_row(cls, saga_id: uuid.UUID, state: str, data: dict[str, Any]) -> DocumentSaga:
        """From a saga.instances row of the documents workflow (its id, state and data)."""
        required = tuple(data.get("required_roles") or ())
        answered = {s["role"] for s in data.get("signoffs") or ()}
        return cls(
            saga_id=saga_id,
            document_id=data["document_id"],
            change_id=data["change_id"],
            state=state,
            required_roles=required,
            pending_roles=tuple(r for r in required if r not in answered),
        )


async def find_document_saga(
    conn: AsyncConnection, document_id: str, change_id: str | None = None
) -> DocumentSaga:
    """The unfinished saga of the document (of this change, when given)."""
    query = (
        select(instances.c.id, instances.c.business_key, instances.c.state, instances.c.data)
        .where(
            instances.c.workflow == machine.name,
            instances.c.finished_at.is_(None),
            instances.c.data["document_id"].astext == document_id,
        )
        .order_by(instances.c.created_at)
    )
    if change_id is not None:
        query = query.where(instances.c.business_key == business_key(document_id, change_id))
    rows = (await conn.execute(query)).all()
    if not rows:
        which = document_id if change_id is None else business_key(document_id, change_id)
        raise DocumentLookupError(f"no unfinished approval for document {which}")
    if len(rows) > 1:
        changes = ", ".join(str(row.data["change_id"]) for row in rows)
        raise DocumentLookupError(
            f"document {document_id} has {len(rows)} unfinished changes ({changes}); "
            "name one with --change"
        )
    return DocumentSaga.from_row(rows[0].id, rows[0].state, rows[0].data)


def answer(
    saga: DocumentSaga, *, role: str, approver: str, comment: str = "", granted: bool
) -> Envelope[ApprovalGranted] | Envelope[ApprovalRejected]:
    """The approval or rejection envelope for this saga (raises DocumentLookupError if invalid)."""
    fields = {
        "document_id": saga.document_id,
        "change_id": saga.change_id,
        "role": role,
        "approver": approver,
        "comment": comment,
    }
    try:
        if granted:
            return new_envelope(ApprovalGranted(**fields), correlation_id=saga.saga_id)
        return new_envelope(ApprovalRejected(**fields), correlation_id=saga.saga_id)
    except ValidationError as exc:
        raise DocumentLookupError(f"invalid answer: {validation_summary(exc)}") from None


async def answer_for(
    engine: AsyncEngine,
    document_id: str,
    *,
    role: str,
    approver: str,
    comment: str = "",
    granted: bool,
    change_id: str | None = None,
) -> tuple[DocumentSaga, Envelope[ApprovalGranted] | Envelope[ApprovalRejected]]:
    """Resolve the document and build the answer; the saga tells the CLI whether to warn
    (`accepts_answers`, `pending_roles`) before it publishes."""
    async with engine.connect() as conn:
        saga = await find_document_saga(conn, document_id, change_id)
    return saga, answer(saga, role=role, approver=approver, comment=comment, granted=granted)
