"""The master index: one current entry per document, and every update kept as a version.

An update writes a new row in master_index_versions (numbered per document) and points the
document's entry at it. RestorePreviousVersion points the entry back at the version before this
change's update (or removes the entry when the change created it); the restored version row
stays, marked restored_at, so the history keeps what was undone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.documents import rules
from consumers.documents.store import (
    change_row,
    current,
    draft_of,
    drill_of,
    highest,
    is_voided,
    lock_document,
    mark_voided,
)
from consumers.documents.tables import library, master_index, master_index_versions
from contracts import documents as d
from contracts.base import ReplyEvent
from contracts.envelope import Envelope

_CONTENT = ("change_id", "final_version", "location", "title")


async def entry_version(conn: AsyncConnection, document_id: str) -> int | None:
    """The document's current master index version (None: no entry)."""
    value = await conn.scalar(
        select(master_index.c.version).where(master_index.c.document_id == document_id)
    )
    return None if value is None else int(value)


def _update_of(row: Row[Any] | None) -> rules.IndexUpdate | None:
    if row is None:
        return None
    return rules.IndexUpdate(row.version, row.previous_version, row.restored_at is not None)


async def update_master_index(
    conn: AsyncConnection, envelope: Envelope[d.UpdateMasterIndex]
) -> ReplyEvent:
    c = envelope.payload
    ids = {"document_id": c.document_id, "change_id": c.change_id}
    await lock_document(conn, c.document_id)
    ours = await change_row(conn, master_index_versions, c.document_id, c.change_id)
    filed = await change_row(conn, library, c.document_id, c.change_id)
    update_row = _update_of(ours)
    decision = rules.decide_step(
        rules.Step.INDEX,
        voided=await is_voided(conn, c.document_id, c.change_id, rules.Step.INDEX),
        existing=None if update_row is None else not update_row.restored,
        drill=drill_of(await draft_of(conn, c.document_id, c.change_id)),
        missing=None if current(filed, "filed") else rules.REASON_NOT_FILED,
    )
    if isinstance(decision, rules.Refuse):
        return d.MasterIndexUpdateFailed(**ids, reason=decision.reason)
    if isinstance(decision, rules.Report):
        assert update_row is not None
        return d.MasterIndexUpdated(**ids, index_version=update_row.version)
    assert filed is not None
    version = rules.next_version(
        await highest(conn, master_index_versions.c.version, c.document_id)
    )
    content = {
        "change_id": c.change_id,
        "final_version": c.final_version,
        "location": c.location,
        "title": filed.title,
    }
    await conn.execute(
        master_index_versions.insert().values(
            document_id=c.document_id,
            version=version,
            previous_version=await entry_version(conn, c.document_id),
            **content,
        )
    )
    await _point_entry(conn, c.document_id, version, content)
    return d.MasterIndexUpdated(**ids, index_version=version)


async def restore_previous_version(
    conn: AsyncConnection, envelope: Envelope[d.RestorePreviousVersion]
) -> ReplyEvent:
    c = envelope.payload
    await lock_document(conn, c.document_id)
    ours = _update_of(await change_row(conn, master_index_versions, c.document_id, c.change_id))
    action = rules.decide_restore(ours, await entry_version(conn, c.document_id))
    if action is rules.RestoreAction.VOID:
        await mark_voided(conn, c.document_id, c.change_id, rules.Step.INDEX)
    elif action is rules.RestoreAction.ROLL_BACK:
        assert ours is not None
        await _roll_back(conn, c.document_id, ours.previous_version)
    if action in (rules.RestoreAction.ROLL_BACK, rules.RestoreAction.SUPERSEDED):
        await conn.execute(
            update(master_index_versions)
            .where(
                master_index_versions.c.document_id == c.document_id,
                master_index_versions.c.change_id == c.change_id,
            )
            .values(restored_at=func.now())
        )
    return d.PreviousVersionRestored(
        document_id=c.document_id,
        change_id=c.change_id,
        index_version=await entry_version(conn, c.document_id),
    )


async def _roll_back(conn: AsyncConnection, document_id: str, previous: int | None) -> None:
    if previous is None:  # this change created the entry: the index had none before
        await conn.execute(delete(master_index).where(master_index.c.document_id == document_id))
        return
    row = (
        await conn.execute(
            select(*(master_index_versions.c[name] for name in _CONTENT)).where(
                master_index_versions.c.document_id == document_id,
                master_index_versions.c.version == previous,
            )
        )
    ).one()
    await _point_entry(conn, document_id, previous, dict(row._mapping))


async def _point_entry(
    conn: AsyncConnection, document_id: str, version: int, content: dict[str, Any]
) -> None:
    statement = pg_insert(master_index).values(document_id=document_id, version=version, **content)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[master_index.c.document_id],
            set_={"version": version, **content, "updated_at": func.now()},
        )
    )
