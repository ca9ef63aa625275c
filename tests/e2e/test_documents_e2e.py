"""Document approvals through real processes: every tier and band, rejection, failure after filing.

The test publishes DocumentChangeDetected events and answers approvals the way the CLI does
(orchestrator.documents_lookup resolves the document to its saga and builds the answer).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.approvals import tables as ap
from consumers.documents import tables as docs
from contracts import documents as d
from contracts.envelope import new_envelope
from orchestrator.documents_lookup import DocumentSaga, answer_for
from orchestrator.store.tables import instances
from sagaline.db import create_engine
from sagaline.messaging.publish import publish_envelope
from sagaline.service import confirm_channel, connect_amqp
from sagaline.settings import Settings
from sagaline_tools.cli.demo_tables import documents_view
from sagaline_tools.demos import documents as demo
from tests.e2e.conftest import Process, System, _free_port
from tests.unit.test_demo_tables import row_of
from tests.unit.test_demo_tables import text as as_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

STEWARD, DBA, COMPLIANCE, LEAD = "data_steward", "dba", "compliance", "governance_lead"


@dataclass(frozen=True)
class Case:
    name: str
    metadata: d.DocumentMetadata
    score: float
    tier: int
    route: d.Route
    roles: tuple[str, ...]
    expected: str = "completed"
    reject_by: str | None = None


def meta(object_type: str, **flags: Any) -> d.DocumentMetadata:
    return d.DocumentMetadata(object_type=object_type, **flags)


CASES = (
    Case("tier 1, auto", meta("schema"), 0.97, 1, "auto", ()),
    Case("tier 1, single", meta("schema"), 0.80, 1, "single", (STEWARD,)),
    Case("tier 1, full chain", meta("schema"), 0.5, 1, "full", (STEWARD,)),
    Case("tier 2, auto", meta("view"), 0.95, 2, "auto", ()),
    Case("tier 2, single", meta("view"), 0.9, 2, "single", (DBA,)),
    Case("tier 2, full chain", meta("table"), 0.79, 2, "full", (STEWARD, DBA)),
    Case("tier 3, sensitive high score", meta("schema", contains_financial=True), 0.99, 3,
         "single", (COMPLIANCE,)),
    Case("tier 3, full chain", meta("table", contains_pii=True), 0.5, 3, "full",
         (STEWARD, DBA, COMPLIANCE)),
    Case("tier 4, single", meta("procedure", critical_system=True), 0.85, 4, "single", (LEAD,)),
    Case("tier 4, full chain", meta("procedure", critical_system=True), 0.3, 4, "full",
         (STEWARD, DBA, COMPLIANCE, LEAD)),
    Case("tier 2, rejected by the DBA", meta("table"), 0.5, 2, "full", (STEWARD, DBA),
         expected="rejected", reject_by=DBA),
)  # fmt: skip


@pytest.fixture(scope="module")
def system(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """As conftest's `system`, started once for this module: the tests use their own documents."""
    from consumers import WORKERS

    logs = tmp_path_factory.mktemp("documents-e2e")
    value = System(settings)
    workers = [(name, ["-m", "consumers", name]) for name in WORKERS]
    for name, args in [("orchestrator", ["-m", "orchestrator"]), *workers]:
        value.processes.append(Process(name, args, _free_port(), logs / f"{name}.log"))
    try:
        for process in value.processes:
            value.start(process)
        value.wait_ready()
        yield value
    finally:
        value.stop_all()


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    value = create_engine(settings, pool_size=2)
    yield value
    await value.dispose()


@pytest.fixture
async def channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    connection = await connect_amqp(settings)
    try:
        yield await confirm_channel(connection)
    finally:
        await connection.close()


async def publish_change(
    channel: AbstractChannel,
    settings: Settings,
    document_id: str,
    change_id: str,
    metadata: d.DocumentMetadata,
    score: float,
) -> uuid.UUID:
    saga_id = uuid.uuid4()
    change = d.DocumentChangeDetected(
        document_id=document_id,
        change_id=change_id,
        title=f"{document_id} documentation",
        metadata=metadata,
        quality_score=score,
    )
    envelope = new_envelope(change, correlation_id=saga_id)
    await publish_envelope(channel, settings.topology.events_exchange, envelope)
    return saga_id


async def answer_until_final(
    engine: AsyncEngine,
    channel: AbstractChannel,
    settings: Settings,
    sagas: dict[uuid.UUID, Case | None],
    deadline_s: float = 150.0,
) -> dict[uuid.UUID, Any]:
    """Answer each pending role once, as an operator with the CLI would; rows once all final."""
    answered: set[tuple[uuid.UUID, str]] = set()
    states: dict[uuid.UUID, str] = {}
    try:
        return await asyncio.wait_for(
            _answer_loop(engine, channel, settings, sagas, answered, states), deadline_s
        )
    except TimeoutError:
        raise AssertionError(f"not final in {deadline_s}s: {states}") from None


async def _answer_loop(
    engine: AsyncEngine,
    channel: AbstractChannel,
    settings: Settings,
    sagas: dict[uuid.UUID, Case | None],
    answered: set[tuple[uuid.UUID, str]],
    states: dict[uuid.UUID, str],
) -> dict[uuid.UUID, Any]:
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(select(instances).where(instances.c.id.in_(list(sagas))))
            ).all()
        states.update({r.id: r.state for r in rows})
        if len(rows) == len(sagas) and all(r.finished_at is not None for r in rows):
            return {r.id: r for r in rows}
        for row in rows:
            saga = DocumentSaga.from_row(row.id, row.state, row.data)
            case = sagas[row.id]
            if not saga.accepts_answers:
                continue
            for role in saga.pending_roles:
                if (row.id, role) in answered:
                    continue
                _, envelope = await answer_for(
                    engine,
                    saga.document_id,
                    role=role,
                    approver=f"{role}-on-call",
                    comment="reviewed in e2e",
                    granted=case is None or case.reject_by != role,
                )
                assert envelope.correlation_id == row.id
                await publish_envelope(channel, settings.topology.events_exchange, envelope)
                answered.add((row.id, role))
        await asyncio.sleep(0.25)


async def test_every_tier_and_band_reaches_its_end_state(
    system: System, settings: Settings, engine: AsyncEngine, channel: AbstractChannel
) -> None:
    sagas: dict[uuid.UUID, Case | None] = {}
    documents: dict[uuid.UUID, str] = {}
    for case in CASES:
        document_id = f"e2e-{uuid.uuid4().hex[:10]}"
        saga_id = await publish_change(
            channel, settings, document_id, "c1", case.metadata, case.score
        )
        sagas[saga_id] = case
        documents[saga_id] = document_id

    rows = await answer_until_final(engine, channel, settings, sagas)

    for saga_id, case in sagas.items():
        assert case is not None
        row = rows[saga_id]
        assert row.state == case.expected, (case.name, row.state, row.runtime.get("reason"))
        assert (row.data["tier"], row.data["route"]) == (case.tier, case.route), case.name
        assert tuple(row.data["required_roles"]) == case.roles, case.name
    async with engine.connect() as conn:
        indexed = dict(
            (
                await conn.execute(
                    select(docs.master_index.c.document_id, docs.master_index.c.version)
                )
            ).all()
        )
        drafts = dict(
            (await conn.execute(select(docs.drafts.c.document_id, docs.drafts.c.status))).all()
        )
        requests = (
            await conn.execute(select(ap.requests.c.document_id, ap.requests.c.status))
        ).all()
    for saga_id, case in sagas.items():
        assert case is not None
        document_id = documents[saga_id]
        if case.expected == "completed":
            assert indexed.get(document_id) == 1, case.name
            assert drafts[document_id] == "generated", case.name
        else:
            # Rejected after the draft: no draft is left, no approver is still held.
            assert document_id not in indexed, case.name
            assert drafts[document_id] == "deleted", case.name
            assert {s for doc, s in requests if doc == document_id} == {"released"}
    for process in system.processes:
        assert process.popen is not None and process.popen.poll() is None, process.log_tail()


async def test_a_failure_after_filing_leaves_no_filed_file_and_the_previous_index_version(
    system: System, settings: Settings, engine: AsyncEngine, channel: AbstractChannel
) -> None:
    document_id = f"e2e-{uuid.uuid4().hex[:10]}"
    first = await publish_change(channel, settings, document_id, "c1", meta("table"), 0.97)
    rows = await answer_until_final(engine, channel, settings, {first: None})
    assert rows[first].state == "completed"

    # The next change of the same document is approved by both roles, filed, then the master
    # index refuses it (failure drill): everything is undone, newest first.
    drill = meta("table", failure_drill="index")
    second = await publish_change(channel, settings, document_id, "c2", drill, 0.5)
    rows = await answer_until_final(engine, channel, settings, {second: None})

    row = rows[second]
    assert row.state == "failed"
    assert row.runtime["reason"].startswith("master index update failed")
    async with engine.connect() as conn:
        library = dict(
            (
                await conn.execute(
                    select(docs.library.c.change_id, docs.library.c.status).where(
                        docs.library.c.document_id == document_id
                    )
                )
            ).all()
        )
        entry = (
            await conn.execute(
                select(docs.master_index.c.version, docs.master_index.c.change_id).where(
                    docs.master_index.c.document_id == document_id
                )
            )
        ).one()
        undone = (
            await conn.execute(
                text(
                    "SELECT (SELECT status FROM documents.drafts WHERE document_id = :d"
                    "        AND change_id = 'c2'),"
                    "       (SELECT status FROM documents.finals WHERE document_id = :d"
                    "        AND change_id = 'c2')"
                ),
                {"d": document_id},
            )
        ).one()
        history = (
            await conn.execute(
                text(
                    "SELECT message_type FROM saga.history WHERE saga_id = :s"
                    " AND outcome = 'transitioned' ORDER BY id"
                ),
                {"s": second},
            )
        ).scalars()
        confirmations = [t for t in history if t.endswith(("Deleted", "Released", "Restored"))]
    assert library == {"c1": "filed", "c2": "deleted"}
    assert tuple(entry) == (1, "c1")
    assert tuple(undone) == ("deleted", "deleted")
    assert confirmations == [
        "FiledDocumentDeleted",
        "FinalDeleted",
        "ApproverReleased",
        "ApproverReleased",
        "DraftDeleted",
    ]


async def test_the_document_demo_answers_its_own_approvals(
    system: System, settings: Settings
) -> None:
    scenario = demo.build_scenario(f"e2e{uuid.uuid4().hex[:6]}")
    result = await demo.run(settings, scenario, wait_seconds=120, poll_seconds=0.25)

    assert result.ok, result.summary()
    assert result.answers == sum(len(doc.roles) for doc in scenario.documents)
    # What `sagaline demo documents` prints for this real run.
    shown = as_text(documents_view(result))
    assert row_of(shown, "rejected-by-dba")[3:] == ["rejected 1", "rejected 1", "0"]
    assert "✓ every saga ended as predicted" in shown
