"""The documents and approvals workers on a real RabbitMQ and PostgreSQL.

Both workers run in-process for the whole module, in a broker namespace of their own. Every test
uses fresh document ids, so tests share the database without interfering.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers import WORKERS, WorkerSettings, build_app
from consumers.approvals import tables as ap
from consumers.documents import rules
from consumers.documents import tables as docs
from consumers.testing import (
    ReplyListener,
    delete_namespace,
    running,
    send_command,
    wait_parked,
)
from contracts import documents as d
from contracts.base import Command
from contracts.envelope import Envelope, new_envelope
from contracts.topology import H_ERROR, H_REASON, ParkReason
from sagaline.db import create_unpooled_engine
from sagaline.service import confirm_channel, connect_amqp
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TABLE = d.DocumentMetadata(object_type="table")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
async def wsettings(settings: Settings) -> AsyncIterator[Settings]:
    own = settings.model_copy(update={"namespace": f"{settings.namespace}-d{uuid.uuid4().hex[:6]}"})
    yield own
    connection = await connect_amqp(own)
    try:
        await delete_namespace(await connection.channel(), own.topology, WORKERS)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def workers(wsettings: Settings) -> AsyncIterator[None]:
    config = WorkerSettings(fail_commands=frozenset())
    async with (
        running(build_app("documents", wsettings, config)),
        running(build_app("approvals", wsettings, config)),
    ):
        yield


@pytest.fixture(scope="module")
async def db(wsettings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(wsettings.sqlalchemy_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def connection(wsettings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect_amqp(wsettings)
    yield connection
    await connection.close()


@pytest.fixture
async def channel(connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    channel = await confirm_channel(connection)
    yield channel
    await channel.close()


@pytest.fixture
async def replies(
    workers: None, channel: AbstractChannel, wsettings: Settings
) -> AsyncIterator[ReplyListener]:
    async with ReplyListener(channel, wsettings.topology) as listener:
        yield listener


class Client:
    """Send commands for one document, get their replies."""

    def __init__(self, channel: AbstractChannel, settings: Settings, replies: ReplyListener):
        self.channel = channel
        self.settings = settings
        self.replies = replies

    async def send(self, envelope: Envelope[Any]) -> None:
        await send_command(self.channel, self.settings.topology, envelope)

    async def call(self, command: Command) -> Any:
        envelope = new_envelope(command, correlation_id=uuid.uuid4())
        await self.send(envelope)
        (reply,) = await self.replies.wait(envelope.message_id)
        return reply.envelope.payload


@pytest.fixture
def client(channel: AbstractChannel, wsettings: Settings, replies: ReplyListener) -> Client:
    return Client(channel, wsettings, replies)


def draft_command(
    document_id: str, change_id: str, metadata: d.DocumentMetadata = TABLE
) -> d.GenerateDraft:
    return d.GenerateDraft(
        document_id=document_id,
        change_id=change_id,
        title=f"{document_id} docs",
        metadata=metadata,
        quality_score=0.5,
    )


async def file_change(
    client: Client, document_id: str, change_id: str, metadata: d.DocumentMetadata = TABLE
) -> str:
    """Draft, final and filing for one change; the library location."""
    ids = {"document_id": document_id, "change_id": change_id}
    draft = await client.call(draft_command(document_id, change_id, metadata))
    assert isinstance(draft, d.DraftGenerated)
    final = await client.call(d.GenerateFinal(**ids, draft_version=draft.draft_version))
    assert isinstance(final, d.FinalGenerated)
    filed = await client.call(d.FileDocument(**ids, final_version=final.final_version))
    assert isinstance(filed, d.DocumentFiled)
    return str(filed.location)


async def index_change(client: Client, document_id: str, change_id: str) -> Any:
    location = await file_change(client, document_id, change_id)
    final_version = int(location.rsplit("/v", 1)[1])
    return await client.call(
        d.UpdateMasterIndex(
            document_id=document_id,
            change_id=change_id,
            final_version=final_version,
            location=location,
        )
    )


async def entry(db: AsyncEngine, document_id: str) -> tuple[int, str] | None:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(docs.master_index.c.version, docs.master_index.c.change_id).where(
                    docs.master_index.c.document_id == document_id
                )
            )
        ).first()
    return None if row is None else (row.version, row.change_id)


def restore(document_id: str, change_id: str) -> d.RestorePreviousVersion:
    return d.RestorePreviousVersion(document_id=document_id, change_id=change_id)


# --- tiers ---------------------------------------------------------------------------------------


async def test_draft_gets_its_tier_from_the_seeded_table(client: Client) -> None:
    pii = d.DocumentMetadata(object_type="table", contains_pii=True)
    draft = await client.call(draft_command(uid("doc"), "c1", pii))

    assert isinstance(draft, d.DraftGenerated)
    assert (draft.tier, draft.sla_hours, draft.escalation_hours) == (3, 72, 36)
    assert draft.tier_roles == ("data_steward", "dba", "compliance")
    assert draft.sensitive is True
    assert draft.draft_version == 1


async def test_a_tier_added_with_sql_applies_without_code_changes(
    client: Client, db: AsyncEngine
) -> None:
    object_type = f"report_{uuid.uuid4().hex[:8]}"
    async with db.begin() as conn:
        await conn.execute(
            insert(docs.approval_tiers).values(
                tier=9,
                name="board reports",
                sla_hours=6,
                escalation_hours=2,
                roles=["data_steward", "board"],
                object_types=[object_type],
                on_pii=False,
                on_financial=False,
                on_critical=False,
            )
        )
    try:
        draft = await client.call(
            draft_command(uid("doc"), "c1", d.DocumentMetadata(object_type=object_type))
        )
    finally:
        async with db.begin() as conn:
            await conn.execute(delete(docs.approval_tiers).where(docs.approval_tiers.c.tier == 9))

    assert isinstance(draft, d.DraftGenerated)
    assert (draft.tier, draft.sla_hours, draft.tier_roles) == (9, 6, ("data_steward", "board"))


async def test_a_tier_row_the_contract_cannot_carry_parks_the_command_with_a_reason(
    client: Client, db: AsyncEngine, wsettings: Settings
) -> None:
    object_type = f"minutes_{uuid.uuid4().hex[:8]}"
    async with db.begin() as conn:
        await conn.execute(
            insert(docs.approval_tiers).values(
                tier=8,
                name="misconfigured",
                sla_hours=6,
                escalation_hours=2,
                roles=["Board Member"],  # not a role name: spaces and capitals
                object_types=[object_type],
                on_pii=False,
                on_financial=False,
                on_critical=False,
            )
        )
    command = new_envelope(
        draft_command(uid("doc"), "c1", d.DocumentMetadata(object_type=object_type)),
        correlation_id=uuid.uuid4(),
    )
    try:
        await client.send(command)
        parked = await wait_parked(
            client.channel, wsettings.topology.parking_queue("documents"), command.message_id
        )
    finally:
        async with db.begin() as conn:
            await conn.execute(delete(docs.approval_tiers).where(docs.approval_tiers.c.tier == 8))

    assert parked.headers[H_REASON] == ParkReason.RETRIES_EXHAUSTED.value
    error = str(parked.headers[H_ERROR])
    assert "approval tier 8 is not valid" in error
    assert "Board Member" not in error
    assert client.replies.replies_to(command.message_id) == []


# --- versions and the master index ---------------------------------------------------------------


async def test_versions_count_per_document_across_changes(client: Client) -> None:
    document_id = uid("doc")
    first = await client.call(draft_command(document_id, "c1"))
    second = await client.call(draft_command(document_id, "c2"))
    again = await client.call(draft_command(document_id, "c1"))  # a re-sent command

    assert (first.draft_version, second.draft_version) == (1, 2)
    assert again == first


async def test_master_index_versions_and_restore_to_the_version_before_the_change(
    client: Client, db: AsyncEngine
) -> None:
    document_id = uid("doc")
    first = await index_change(client, document_id, "c1")
    second = await index_change(client, document_id, "c2")
    assert (first.index_version, second.index_version) == (1, 2)
    assert await entry(db, document_id) == (2, "c2")

    restored = await client.call(restore(document_id, "c2"))

    assert restored == d.PreviousVersionRestored(
        document_id=document_id, change_id="c2", index_version=1
    )
    assert await entry(db, document_id) == (1, "c1")
    async with db.connect() as conn:
        versions = (
            await conn.execute(
                select(
                    docs.master_index_versions.c.version,
                    docs.master_index_versions.c.previous_version,
                    docs.master_index_versions.c.restored_at.is_not(None),
                )
                .where(docs.master_index_versions.c.document_id == document_id)
                .order_by(docs.master_index_versions.c.version)
            )
        ).all()
    # Every update stays in the history; the undone one is marked.
    assert [tuple(v) for v in versions] == [(1, None, False), (2, 1, True)]

    # Restoring again changes nothing; the undone update is never re-applied.
    assert await client.call(restore(document_id, "c2")) == restored
    again = await client.call(
        d.UpdateMasterIndex(
            document_id=document_id,
            change_id="c2",
            final_version=2,
            location=rules.library_location(document_id, 2),
        )
    )
    assert again == d.MasterIndexUpdateFailed(
        document_id=document_id, change_id="c2", reason=rules.REASON_UNDONE
    )
    assert await entry(db, document_id) == (1, "c1")


async def test_restoring_the_first_update_removes_the_entry(
    client: Client, db: AsyncEngine
) -> None:
    document_id = uid("doc")
    await index_change(client, document_id, "c1")
    restored = await client.call(restore(document_id, "c1"))

    assert restored.index_version is None
    assert await entry(db, document_id) is None


async def test_restore_under_a_later_change_keeps_the_later_entry(
    client: Client, db: AsyncEngine
) -> None:
    document_id = uid("doc")
    await index_change(client, document_id, "c1")
    await index_change(client, document_id, "c2")
    restored = await client.call(restore(document_id, "c1"))

    assert restored.index_version == 2
    assert await entry(db, document_id) == (2, "c2")


async def test_restore_before_the_update_voids_a_late_update(
    client: Client, db: AsyncEngine
) -> None:
    document_id = uid("doc")
    location = await file_change(client, document_id, "c1")
    assert (await client.call(restore(document_id, "c1"))).index_version is None
    late = await client.call(
        d.UpdateMasterIndex(
            document_id=document_id, change_id="c1", final_version=1, location=location
        )
    )

    assert late == d.MasterIndexUpdateFailed(
        document_id=document_id, change_id="c1", reason=rules.REASON_VOIDED
    )
    assert await entry(db, document_id) is None


# --- library, drills, undo -----------------------------------------------------------------------


async def test_deleting_a_filed_document_leaves_no_filed_file(
    client: Client, db: AsyncEngine
) -> None:
    document_id = uid("doc")
    await file_change(client, document_id, "c1")
    ids = {"document_id": document_id, "change_id": "c1"}
    assert await client.call(d.DeleteFiledDocument(**ids)) == d.FiledDocumentDeleted(**ids)
    assert await client.call(d.DeleteFinal(**ids)) == d.FinalDeleted(**ids)
    assert await client.call(d.DeleteDraft(**ids)) == d.DraftDeleted(**ids)

    async with db.connect() as conn:
        statuses = [
            await conn.scalar(select(table.c.status).where(table.c.document_id == document_id))
            for table in (docs.library, docs.finals, docs.drafts)
        ]
    assert statuses == ["deleted", "deleted", "deleted"]


@pytest.mark.parametrize(
    ("drill", "reply"),
    [
        ("draft", d.DraftGenerationFailed),
        ("final", d.FinalGenerationFailed),
        ("filing", d.FilingFailed),
        ("index", d.MasterIndexUpdateFailed),
    ],
)
async def test_failure_drills_refuse_their_step(
    client: Client, drill: d.FailureDrill, reply: type[Any]
) -> None:
    document_id = uid("doc")
    ids = {"document_id": document_id, "change_id": "c1"}
    metadata = d.DocumentMetadata(object_type="schema", failure_drill=drill)
    answers = [await client.call(draft_command(document_id, "c1", metadata))]
    if drill != "draft":
        answers.append(await client.call(d.GenerateFinal(**ids, draft_version=1)))
    if drill not in ("draft", "final"):
        answers.append(await client.call(d.FileDocument(**ids, final_version=1)))
    if drill == "index":
        location = rules.library_location(document_id, 1)
        answers.append(
            await client.call(d.UpdateMasterIndex(**ids, final_version=1, location=location))
        )

    assert isinstance(answers[-1], reply)
    assert "failure drill" in answers[-1].reason
    assert all(not isinstance(a, reply) for a in answers[:-1])


async def test_delete_before_filing_voids_a_late_filing(client: Client, db: AsyncEngine) -> None:
    document_id = uid("doc")
    ids = {"document_id": document_id, "change_id": "c1"}
    await client.call(draft_command(document_id, "c1"))
    await client.call(d.GenerateFinal(**ids, draft_version=1))
    await client.call(d.DeleteFiledDocument(**ids))

    late = await client.call(d.FileDocument(**ids, final_version=1))

    assert late == d.FilingFailed(**ids, reason=rules.REASON_VOIDED)
    async with db.connect() as conn:
        filed = await conn.scalar(
            select(func.count()).where(docs.library.c.document_id == document_id)
        )
    assert filed == 0


# --- redelivery ----------------------------------------------------------------------------------


@pytest.mark.parametrize("worker", ["documents", "approvals"])
async def test_redelivered_command_returns_the_stored_reply_and_acts_once(
    client: Client, db: AsyncEngine, worker: str
) -> None:
    document_id = uid("doc")
    command: Command
    if worker == "documents":
        command = draft_command(document_id, "c1")
    else:
        command = d.ReserveApprover(
            document_id=document_id,
            change_id="c1",
            role="dba",
            tier=2,
            respond_by=datetime(2030, 1, 1, tzinfo=UTC),
        )
    envelope = new_envelope(command, correlation_id=uuid.uuid4())
    await client.send(envelope)
    await client.send(envelope)
    first, second = await client.replies.wait(envelope.message_id, count=2)

    assert first.message.body == second.message.body
    table = docs.drafts if worker == "documents" else ap.requests
    inbox = WORKERS[worker].inbox
    async with db.connect() as conn:
        rows = await conn.scalar(select(func.count()).where(table.c.document_id == document_id))
        claimed = await conn.scalar(
            select(func.count()).where(inbox.c.message_id == envelope.message_id)
        )
    assert (rows, claimed) == (1, 1)


# --- approvals -----------------------------------------------------------------------------------


async def test_approval_requests_open_release_and_close(client: Client, db: AsyncEngine) -> None:
    document_id = uid("doc")
    ids = {"document_id": document_id, "change_id": "c1"}
    respond_by = datetime(2030, 1, 1, tzinfo=UTC)
    for role in ("data_steward", "dba"):
        reserved = await client.call(
            d.ReserveApprover(**ids, role=role, tier=2, respond_by=respond_by)
        )
        assert reserved == d.ApproverReserved(**ids, role=role, open=True)
    # A release that overtook its reservation keeps the request closed.
    await client.call(d.ReleaseApprover(**ids, role="compliance"))
    late = await client.call(
        d.ReserveApprover(**ids, role="compliance", tier=2, respond_by=respond_by)
    )
    assert late == d.ApproverReserved(**ids, role="compliance", open=False)

    escalation = d.EscalateApproval(**ids, tier=2, pending_roles=("dba",), decide_by=respond_by)
    await client.call(escalation)
    await client.call(escalation)  # a re-sent command records nothing new
    signoffs = (
        d.Signoff(role="data_steward", approver="ada"),
        d.Signoff(role="dba", approver="bob"),
    )
    recorded = await client.call(d.RecordApprovalDecision(**ids, route="full", signoffs=signoffs))
    assert recorded == d.ApprovalDecisionRecorded(**ids)

    async with db.connect() as conn:
        statuses = dict(
            (
                await conn.execute(
                    select(ap.requests.c.role, ap.requests.c.status).where(
                        ap.requests.c.document_id == document_id
                    )
                )
            ).all()
        )
        escalations = await conn.scalar(
            select(func.count()).where(ap.escalations.c.document_id == document_id)
        )
        decision = await conn.scalar(
            select(ap.decisions.c.signoffs).where(ap.decisions.c.document_id == document_id)
        )
    assert statuses == {"data_steward": "approved", "dba": "approved", "compliance": "released"}
    assert escalations == 1
    assert decision == [s.model_dump(mode="json") for s in signoffs]
