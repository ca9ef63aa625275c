"""Approvals' command handlers: approval requests per role, escalations, recorded decisions."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.approvals import rules
from consumers.approvals.tables import SCHEMA, decisions, escalations, requests
from consumers.locks import lock_order
from consumers.runtime import Handler, HandlerMap
from consumers.settings import WorkerSettings
from contracts import documents as d
from contracts.base import Command, ReplyEvent
from contracts.envelope import Envelope


async def _lock(conn: AsyncConnection, document_id: str, change_id: str) -> None:
    # A reservation may race its own release (the rejection overtook it): serialise per change,
    # since the request row may not exist yet (see consumers.locks).
    await lock_order(conn, SCHEMA, f"change:{document_id}:{change_id}")


def _request(document_id: str, change_id: str, role: str) -> ColumnElement[bool]:
    return and_(
        requests.c.document_id == document_id,
        requests.c.change_id == change_id,
        requests.c.role == role,
    )


async def request_status(
    conn: AsyncConnection, document_id: str, change_id: str, role: str
) -> rules.RequestStatus | None:
    value = await conn.scalar(
        select(requests.c.status).where(_request(document_id, change_id, role))
    )
    return None if value is None else rules.RequestStatus(value)


async def reserve_approver(
    conn: AsyncConnection, envelope: Envelope[d.ReserveApprover]
) -> ReplyEvent:
    c = envelope.payload
    await _lock(conn, c.document_id, c.change_id)
    action = rules.decide_reserve(await request_status(conn, c.document_id, c.change_id, c.role))
    if action is rules.ReserveAction.OPEN:
        await conn.execute(
            insert(requests).values(
                document_id=c.document_id,
                change_id=c.change_id,
                role=c.role,
                saga_id=envelope.correlation_id,
                tier=c.tier,
                respond_by=c.respond_by,
                status=rules.RequestStatus.OPEN.value,
            )
        )
    return d.ApproverReserved(
        document_id=c.document_id,
        change_id=c.change_id,
        role=c.role,
        open=action is not rules.ReserveAction.REFUSE,
    )


async def release_approver(
    conn: AsyncConnection, envelope: Envelope[d.ReleaseApprover]
) -> ReplyEvent:
    c = envelope.payload
    await _lock(conn, c.document_id, c.change_id)
    action = rules.decide_release(await request_status(conn, c.document_id, c.change_id, c.role))
    released = rules.RequestStatus.RELEASED.value
    if action is rules.ReleaseAction.RELEASE:
        await conn.execute(
            update(requests)
            .where(_request(c.document_id, c.change_id, c.role))
            .values(status=released, updated_at=func.now())
        )
    elif action is rules.ReleaseAction.MARK:
        await conn.execute(
            insert(requests).values(
                document_id=c.document_id,
                change_id=c.change_id,
                role=c.role,
                saga_id=envelope.correlation_id,
                status=released,
            )
        )
    return d.ApproverReleased(document_id=c.document_id, change_id=c.change_id, role=c.role)


async def escalate_approval(
    conn: AsyncConnection, envelope: Envelope[d.EscalateApproval]
) -> ReplyEvent:
    c = envelope.payload
    # One escalation per change: a re-sent command finds it recorded and changes nothing.
    await conn.execute(
        pg_insert(escalations)
        .values(
            document_id=c.document_id,
            change_id=c.change_id,
            saga_id=envelope.correlation_id,
            tier=c.tier,
            pending_roles=list(c.pending_roles),
            decide_by=c.decide_by,
        )
        .on_conflict_do_nothing()
    )
    return d.ApprovalEscalated(document_id=c.document_id, change_id=c.change_id)


async def record_decision(
    conn: AsyncConnection, envelope: Envelope[d.RecordApprovalDecision]
) -> ReplyEvent:
    c = envelope.payload
    await _lock(conn, c.document_id, c.change_id)
    recorded = await conn.execute(
        pg_insert(decisions)
        .values(
            document_id=c.document_id,
            change_id=c.change_id,
            saga_id=envelope.correlation_id,
            route=c.route,
            signoffs=[s.model_dump(mode="json") for s in c.signoffs],
        )
        .on_conflict_do_nothing()
        .returning(decisions.c.document_id)
    )
    if recorded.first() is not None:
        # The decision closes the change's open requests: their approvers are done with it.
        await conn.execute(
            update(requests)
            .where(
                requests.c.document_id == c.document_id,
                requests.c.change_id == c.change_id,
                requests.c.status == rules.RequestStatus.OPEN.value,
            )
            .values(status=rules.RequestStatus.APPROVED.value, updated_at=func.now())
        )
    return d.ApprovalDecisionRecorded(document_id=c.document_id, change_id=c.change_id)


def make_handlers(config: WorkerSettings) -> HandlerMap:
    handlers: dict[type[Command], Handler] = {
        d.ReserveApprover: reserve_approver,
        d.ReleaseApprover: release_approver,
        d.EscalateApproval: escalate_approval,
        d.RecordApprovalDecision: record_decision,
    }
    return handlers
