"""Reads and small writes the documents handlers share: the per-document lock, void markers,
the tiers table and the rows of one document change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.documents import rules
from consumers.documents.tables import SCHEMA, approval_tiers, drafts, voided
from consumers.locks import lock_order
from contracts.documents import DocumentMetadata, FailureDrill


async def lock_document(conn: AsyncConnection, document_id: str) -> None:
    # Versions count per document, and a step may race its own undo (a timed-out command and its
    # compensation): every handler serialises on the document first (see consumers.locks).
    await lock_order(conn, SCHEMA, f"document:{document_id}")


async def change_row(
    conn: AsyncConnection, table: Table, document_id: str, change_id: str
) -> Row[Any] | None:
    return (
        await conn.execute(
            select(table).where(table.c.document_id == document_id, table.c.change_id == change_id)
        )
    ).first()


async def highest(conn: AsyncConnection, column: Any, document_id: str) -> int | None:
    table = column.table
    value = await conn.scalar(select(func.max(column)).where(table.c.document_id == document_id))
    return None if value is None else int(value)


def current(row: Row[Any] | None, done_status: str) -> bool | None:
    """None: no record of the step for this change; True: its result is current; False: undone."""
    return None if row is None else row.status == done_status


async def is_voided(
    conn: AsyncConnection, document_id: str, change_id: str, step: rules.Step
) -> bool:
    found = await conn.scalar(
        select(voided.c.step).where(
            voided.c.document_id == document_id,
            voided.c.change_id == change_id,
            voided.c.step == step.value,
        )
    )
    return found is not None


async def mark_voided(
    conn: AsyncConnection, document_id: str, change_id: str, step: rules.Step
) -> None:
    await conn.execute(
        pg_insert(voided)
        .values(document_id=document_id, change_id=change_id, step=step.value)
        .on_conflict_do_nothing()
    )


async def load_tiers(conn: AsyncConnection) -> list[rules.TierRule]:
    rows = await conn.execute(select(approval_tiers).order_by(approval_tiers.c.tier))
    return [
        rules.TierRule(
            tier=row.tier,
            name=row.name,
            sla_hours=row.sla_hours,
            escalation_hours=row.escalation_hours,
            roles=tuple(row.roles),
            object_types=frozenset(row.object_types),
            on_pii=row.on_pii,
            on_financial=row.on_financial,
            on_critical=row.on_critical,
        )
        for row in rows
    ]


def drill_of(draft: Row[Any] | None) -> FailureDrill | None:
    """The failure drill of the change, as recorded with its draft."""
    if draft is None:
        return None
    return DocumentMetadata.model_validate(draft.metadata, strict=False).failure_drill


async def draft_of(conn: AsyncConnection, document_id: str, change_id: str) -> Row[Any] | None:
    return await change_row(conn, drafts, document_id, change_id)
