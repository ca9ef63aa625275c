"""Documents' command handlers for drafts, finals and the library; master_index.py has the index.

Each handler locks the document, reads the change's rows, lets rules decide, and writes the
outcome. Business refusals are failure replies; exceptions are transient (retried, then parked).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import Table, func, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.documents import master_index, rules
from consumers.documents.store import (
    change_row,
    current,
    draft_of,
    drill_of,
    highest,
    is_voided,
    load_tiers,
    lock_document,
    mark_voided,
)
from consumers.documents.tables import drafts, finals, library
from consumers.runtime import Handler, HandlerMap
from consumers.settings import WorkerSettings
from contracts import documents as d
from contracts.base import Command, ReplyEvent
from contracts.envelope import Envelope
from sagaline.messaging.errors import ReportableError
from sagaline.messaging.parsing import validation_summary

GENERATED = "generated"
FILED = "filed"
DELETED = "deleted"


class TierMisconfigured(ReportableError):
    """A row of documents.approval_tiers does not fit the contract (transient: fix and replay)."""


async def generate_draft(conn: AsyncConnection, envelope: Envelope[d.GenerateDraft]) -> ReplyEvent:
    c = envelope.payload
    ids = {"document_id": c.document_id, "change_id": c.change_id}
    await lock_document(conn, c.document_id)
    row = await draft_of(conn, c.document_id, c.change_id)
    tiers = await load_tiers(conn)
    # A re-sent command reports the tier the draft got; a new draft gets the table's tier now.
    tier = (
        next((t for t in tiers if t.tier == row.tier), None)
        if row is not None
        else rules.tier_for(c.metadata, tiers)
    )
    decision = rules.decide_step(
        rules.Step.DRAFT,
        voided=await is_voided(conn, c.document_id, c.change_id, rules.Step.DRAFT),
        existing=current(row, GENERATED),
        drill=c.metadata.failure_drill,
        missing=rules.REASON_NO_TIER if tier is None else None,
    )
    if isinstance(decision, rules.Refuse) or tier is None:
        reason = decision.reason if isinstance(decision, rules.Refuse) else rules.REASON_NO_TIER
        return d.DraftGenerationFailed(**ids, reason=reason)
    if isinstance(decision, rules.Report):
        assert row is not None
        version = int(row.draft_version)
    else:
        version = rules.next_version(await highest(conn, drafts.c.draft_version, c.document_id))
        await conn.execute(
            insert(drafts).values(
                **ids,
                draft_version=version,
                saga_id=envelope.correlation_id,
                title=c.title,
                metadata=c.metadata.model_dump(mode="json"),
                quality_score=c.quality_score,
                tier=tier.tier,
                status=GENERATED,
            )
        )
    try:
        return d.DraftGenerated(
            **ids,
            draft_version=version,
            tier=tier.tier,
            sla_hours=tier.sla_hours,
            escalation_hours=tier.escalation_hours,
            tier_roles=tier.roles,
            quality_score=c.quality_score,
            sensitive=rules.is_sensitive(c.metadata),
        )
    except ValidationError as exc:
        # An edited tiers row the contract cannot carry (e.g. a role name with spaces): park the
        # command with the reason; once the row is fixed, replaying it drafts as usual.
        raise TierMisconfigured(
            f"approval tier {tier.tier} is not valid: {validation_summary(exc)}"
        ) from None


async def generate_final(conn: AsyncConnection, envelope: Envelope[d.GenerateFinal]) -> ReplyEvent:
    c = envelope.payload
    ids = {"document_id": c.document_id, "change_id": c.change_id}
    await lock_document(conn, c.document_id)
    draft = await draft_of(conn, c.document_id, c.change_id)
    row = await change_row(conn, finals, c.document_id, c.change_id)
    missing = None
    if current(draft, GENERATED) is not True:
        missing = rules.REASON_NO_DRAFT
    elif draft is not None and draft.draft_version != c.draft_version:
        missing = rules.REASON_DRAFT_VERSION
    decision = rules.decide_step(
        rules.Step.FINAL,
        voided=await is_voided(conn, c.document_id, c.change_id, rules.Step.FINAL),
        existing=current(row, GENERATED),
        drill=drill_of(draft),
        missing=missing,
    )
    if isinstance(decision, rules.Refuse):
        return d.FinalGenerationFailed(**ids, reason=decision.reason)
    if isinstance(decision, rules.Report):
        assert row is not None
        return d.FinalGenerated(**ids, final_version=row.final_version)
    version = rules.next_version(await highest(conn, finals.c.final_version, c.document_id))
    await conn.execute(
        insert(finals).values(
            **ids, final_version=version, draft_version=c.draft_version, status=GENERATED
        )
    )
    return d.FinalGenerated(**ids, final_version=version)


async def file_document(conn: AsyncConnection, envelope: Envelope[d.FileDocument]) -> ReplyEvent:
    c = envelope.payload
    ids = {"document_id": c.document_id, "change_id": c.change_id}
    await lock_document(conn, c.document_id)
    draft = await draft_of(conn, c.document_id, c.change_id)
    final = await change_row(conn, finals, c.document_id, c.change_id)
    row = await change_row(conn, library, c.document_id, c.change_id)
    missing = None
    if current(final, GENERATED) is not True or draft is None:
        missing = rules.REASON_NO_FINAL
    elif final is not None and final.final_version != c.final_version:
        missing = "final version does not match"
    decision = rules.decide_step(
        rules.Step.FILING,
        voided=await is_voided(conn, c.document_id, c.change_id, rules.Step.FILING),
        existing=current(row, FILED),
        drill=drill_of(draft),
        missing=missing,
    )
    if isinstance(decision, rules.Refuse):
        return d.FilingFailed(**ids, reason=decision.reason)
    if isinstance(decision, rules.Report):
        assert row is not None
        return d.DocumentFiled(**ids, location=row.location)
    assert draft is not None
    location = rules.library_location(c.document_id, c.final_version)
    await conn.execute(
        insert(library).values(
            **ids,
            final_version=c.final_version,
            location=location,
            title=draft.title,
            status=FILED,
        )
    )
    return d.DocumentFiled(**ids, location=location)


UndoCommand = d.DeleteDraft | d.DeleteFinal | d.DeleteFiledDocument
UndoReply = type[d.DraftDeleted] | type[d.FinalDeleted] | type[d.FiledDocumentDeleted]


def _undo(table: Table, done: str, step: rules.Step, reply: UndoReply) -> Handler:
    """Delete what the step made (kept as a 'deleted' row), or void the step if it never ran."""

    async def handle(conn: AsyncConnection, envelope: Envelope[Any]) -> ReplyEvent:
        c: UndoCommand = envelope.payload
        await lock_document(conn, c.document_id)
        row = await change_row(conn, table, c.document_id, c.change_id)
        action = rules.decide_undo(current(row, done))
        if action is rules.UndoAction.UNDO:
            await conn.execute(
                update(table)
                .where(table.c.document_id == c.document_id, table.c.change_id == c.change_id)
                .values(status=DELETED, updated_at=func.now())
            )
        elif action is rules.UndoAction.VOID:
            await mark_voided(conn, c.document_id, c.change_id, step)
        return reply(document_id=c.document_id, change_id=c.change_id)

    return handle


def make_handlers(config: WorkerSettings) -> HandlerMap:
    handlers: dict[type[Command], Handler] = {
        d.GenerateDraft: generate_draft,
        d.DeleteDraft: _undo(drafts, GENERATED, rules.Step.DRAFT, d.DraftDeleted),
        d.GenerateFinal: generate_final,
        d.DeleteFinal: _undo(finals, GENERATED, rules.Step.FINAL, d.FinalDeleted),
        d.FileDocument: file_document,
        d.DeleteFiledDocument: _undo(library, FILED, rules.Step.FILING, d.FiledDocumentDeleted),
        d.UpdateMasterIndex: master_index.update_master_index,
        d.RestorePreviousVersion: master_index.restore_previous_version,
    }
    return handlers
