"""Resolving a document id to its unfinished approval saga on the real store (for the CLI)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import documents as d
from contracts.envelope import new_envelope
from orchestrator.documents_lookup import DocumentLookupError, answer_for, find_document_saga
from orchestrator.engine import EngineConfig, Incoming
from orchestrator.store.saga_store import SagaStore
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_engine
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    value = create_engine(settings, pool_size=2)
    yield value
    await value.dispose()


@pytest.fixture
def store(engine: AsyncEngine, settings: Settings) -> SagaStore:
    return SagaStore(engine, settings.topology, EngineConfig(), WORKFLOWS)


async def _start(store: SagaStore, document_id: str, change_id: str) -> uuid.UUID:
    saga_id = uuid.uuid4()
    change = d.DocumentChangeDetected(
        document_id=document_id,
        change_id=change_id,
        title="t",
        metadata=d.DocumentMetadata(object_type="schema"),
        quality_score=0.5,
    )
    await store.handle(Incoming.from_envelope(new_envelope(change, correlation_id=saga_id)))
    return saga_id


async def test_one_unfinished_change_resolves_to_its_saga(
    store: SagaStore, engine: AsyncEngine
) -> None:
    document_id = f"doc-{uuid.uuid4().hex[:10]}"
    saga_id = await _start(store, document_id, "c1")

    saga, envelope = await answer_for(
        engine, document_id, role="data_steward", approver="ada", granted=True
    )

    assert (saga.saga_id, saga.change_id, saga.state) == (saga_id, "c1", "draft_pending")
    assert envelope.correlation_id == saga_id
    assert isinstance(envelope.payload, d.ApprovalGranted)


async def test_unknown_and_ambiguous_documents_are_refused(
    store: SagaStore, engine: AsyncEngine
) -> None:
    document_id = f"doc-{uuid.uuid4().hex[:10]}"
    async with engine.connect() as conn:
        with pytest.raises(DocumentLookupError, match="no unfinished approval"):
            await find_document_saga(conn, document_id)

    first = await _start(store, document_id, "c1")
    second = await _start(store, document_id, "c2")
    async with engine.connect() as conn:
        with pytest.raises(DocumentLookupError, match=r"2 unfinished changes \(c1, c2\)"):
            await find_document_saga(conn, document_id)
        assert (await find_document_saga(conn, document_id, "c1")).saga_id == first
        assert (await find_document_saga(conn, document_id, "c2")).saga_id == second
        with pytest.raises(DocumentLookupError, match="no unfinished approval"):
            await find_document_saga(conn, document_id, "c3")
