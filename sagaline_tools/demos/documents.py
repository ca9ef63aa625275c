"""The document approval demo: changes to publish, how each is answered, the outcome to expect.

`build_scenario` is pure and deterministic for a run tag. One round has a document for each
route through the workflow with the seeded approval tiers: auto-approved (tier 1, high score),
a single approver (tier 2 table, score in the 0.80 band), the full chain of tier 3 (PII) and of
tier 4 (critical system), a rejection by the DBA (tier 2 view), and a change whose filing fails
on purpose (DocumentMetadata.failure_drill), compensated after approval.

`run` talks to a running system through its public surface only: it publishes
DocumentChangeDetected events, then reads saga rows and, for every saga waiting for approvals,
answers each pending role the way `sagaline approve` / `reject` do (orchestrator.documents_lookup
builds the envelopes). It approves unless the scenario names that role as the rejecting one, so
it keeps working when operators edit the tiers table. Progress goes to callbacks.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from contracts.documents import DocumentChangeDetected, DocumentMetadata
from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection
    from sqlalchemy.ext.asyncio import AsyncEngine

    from contracts.envelope import Envelope

_DEMO_NAMESPACE = uuid.UUID("5a6a11e0-de30-4b1e-9d7c-00000000d0c5")
_RUN_TAG = re.compile(r"^[a-z0-9][a-z0-9\-]{0,39}$")

FINAL_STATES = frozenset({"completed", "rejected", "failed", "compensation_failed", "aborted"})
DEMO_APPROVER = "demo-bot"


class Kind(StrEnum):
    AUTO = "auto-approved"
    SINGLE = "single-approver"
    PII = "pii-full-chain"
    CRITICAL = "critical-full-chain"
    REJECTED = "rejected-by-dba"
    FILING_FAILS = "filing-fails"


@dataclass(frozen=True)
class _Case:
    metadata: DocumentMetadata
    quality_score: float
    expected: str
    roles: tuple[str, ...]
    """The roles the seeded tiers and routing ask for (for display; the runner reads the saga)."""
    reject_by: str | None = None


STEWARD, DBA, COMPLIANCE, LEAD = "data_steward", "dba", "compliance", "governance_lead"

CASES: dict[Kind, _Case] = {
    Kind.AUTO: _Case(DocumentMetadata(object_type="schema"), 0.97, "completed", ()),
    Kind.SINGLE: _Case(DocumentMetadata(object_type="table"), 0.88, "completed", (DBA,)),
    Kind.PII: _Case(
        DocumentMetadata(object_type="table", contains_pii=True),
        0.6,
        "completed",
        (STEWARD, DBA, COMPLIANCE),
    ),
    Kind.CRITICAL: _Case(
        DocumentMetadata(object_type="procedure", critical_system=True),
        0.5,
        "completed",
        (STEWARD, DBA, COMPLIANCE, LEAD),
    ),
    Kind.REJECTED: _Case(
        DocumentMetadata(object_type="view"), 0.7, "rejected", (STEWARD, DBA), reject_by=DBA
    ),
    Kind.FILING_FAILS: _Case(
        DocumentMetadata(object_type="schema", failure_drill="filing"),
        0.85,
        "failed",
        (STEWARD,),
    ),
}


@dataclass(frozen=True)
class DemoDocument:
    kind: Kind
    saga_id: uuid.UUID
    """The correlation id the change is published with."""
    change: DocumentChangeDetected
    expected_state: str
    roles: tuple[str, ...]
    reject_by: str | None = None

    @property
    def document_id(self) -> str:
        return self.change.document_id

    def grants(self, role: str) -> bool:
        """How the demo answers for `role`: approve, unless this is the rejecting role."""
        return role != self.reject_by


@dataclass(frozen=True)
class DocumentScenario:
    run_tag: str
    documents: tuple[DemoDocument, ...]

    def check(self, states: Mapping[uuid.UUID, str]) -> list[str]:
        """What differs from the expectation (empty when the run went as predicted)."""
        return [
            f"{d.kind.value} document {d.document_id} (saga {d.saga_id}): "
            f"expected {d.expected_state}, got {states.get(d.saga_id, 'no saga')}"
            for d in self.documents
            if states.get(d.saga_id) != d.expected_state
        ]


def build_scenario(run_tag: str, *, rounds: int = 1) -> DocumentScenario:
    """The documents and expected outcomes of one demo run (no I/O)."""
    if not _RUN_TAG.match(run_tag):
        raise ValueError("run tag must be 1-40 lower-case letters, digits or '-'")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    documents = tuple(_document(run_tag, kind, index) for index in range(rounds) for kind in Kind)
    return DocumentScenario(run_tag=run_tag, documents=documents)


def _document(run_tag: str, kind: Kind, index: int) -> DemoDocument:
    case = CASES[kind]
    document_id = f"demo-{run_tag}-{kind.value}-{index + 1:03d}"
    return DemoDocument(
        kind=kind,
        saga_id=uuid.uuid5(_DEMO_NAMESPACE, f"{run_tag}:{kind.value}:{index}"),
        change=DocumentChangeDetected(
            document_id=document_id,
            change_id="c1",
            title=f"{kind.value} sample {index + 1}",
            metadata=case.metadata,
            quality_score=case.quality_score,
        ),
        expected_state=case.expected,
        roles=case.roles,
        reject_by=case.reject_by,
    )


# --- running against a live system ---------------------------------------------------------------


class DemoError(Exception):
    """The demo cannot run (system not up, schema missing); the message says what to do."""


@dataclass
class DemoProgress:
    scenario: DocumentScenario
    started: float = field(default_factory=time.monotonic)
    states: dict[uuid.UUID, str] = field(default_factory=dict)
    reasons: dict[uuid.UUID, str] = field(default_factory=dict)
    finished: set[uuid.UUID] = field(default_factory=set)
    answered: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    """(saga id, role) pairs the demo has answered."""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def done(self) -> bool:
        return all(d.saga_id in self.finished for d in self.scenario.documents)


@dataclass(frozen=True)
class DemoResult:
    scenario: DocumentScenario
    states: Mapping[uuid.UUID, str]
    reasons: Mapping[uuid.UUID, str]
    answers: int
    problems: tuple[str, ...]
    elapsed: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return not self.problems and not self.timed_out

    def summary(self) -> dict[str, Any]:
        """JSON-ready: what the CLI prints with --json."""
        return {
            "ok": self.ok,
            "run_tag": self.scenario.run_tag,
            "timed_out": self.timed_out,
            "elapsed_seconds": round(self.elapsed, 3),
            "answers_published": self.answers,
            "problems": list(self.problems),
            "documents": [
                {
                    "kind": d.kind.value,
                    "document_id": d.document_id,
                    "saga_id": str(d.saga_id),
                    "expected_state": d.expected_state,
                    "state": self.states.get(d.saga_id),
                    "reason": self.reasons.get(d.saga_id),
                }
                for d in self.scenario.documents
            ],
        }


def _ignore(_: object) -> None:
    return None


async def run(
    settings: Settings,
    scenario: DocumentScenario,
    *,
    wait_seconds: float = 60.0,
    poll_seconds: float = 0.5,
    approver: str = DEMO_APPROVER,
    on_step: Callable[[str], None] = _ignore,
    on_progress: Callable[[DemoProgress], None] = _ignore,
) -> DemoResult:
    """Publish the changes, answer approvals, and watch until every saga is final or
    `wait_seconds` have passed (a run that times out still returns, timed_out=True)."""
    import aio_pika

    from contracts.envelope import new_envelope
    from sagaline.db import create_unpooled_engine

    engine = create_unpooled_engine(settings.sqlalchemy_url)
    progress = DemoProgress(scenario)
    try:
        connection = await aio_pika.connect(
            settings.amqp_url, timeout=10, **amqp_connect_options(settings)
        )
        try:
            channel = await _events_channel(connection, settings)
            exchange = settings.topology.events_exchange
            for document in scenario.documents:
                envelope = new_envelope(document.change, correlation_id=document.saga_id)
                await _publish(channel, exchange, envelope)
            on_step(f"published {len(scenario.documents)} document changes")
            deadline = progress.started + wait_seconds
            while True:
                rows = await _read(engine, [d.saga_id for d in scenario.documents])
                _record(progress, rows)
                await _answer(channel, exchange, progress, rows, approver, on_step)
                on_progress(progress)
                if progress.done or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(poll_seconds)
        finally:
            await connection.close()
    finally:
        await engine.dispose()
    return DemoResult(
        scenario=scenario,
        states=dict(progress.states),
        reasons=dict(progress.reasons),
        answers=len(progress.answered),
        problems=tuple(scenario.check(progress.states)) if progress.done else (),
        elapsed=progress.elapsed,
        timed_out=not progress.done,
    )


async def _events_channel(connection: AbstractConnection, settings: Settings) -> AbstractChannel:
    from aiormq.exceptions import ChannelNotFoundEntity

    exchange = settings.topology.events_exchange
    probe = await connection.channel()
    try:
        await probe.declare_exchange(exchange, passive=True)
    except ChannelNotFoundEntity:
        raise DemoError(f"{exchange} does not exist; start the system first") from None
    await probe.close()
    channel: AbstractChannel = await connection.channel(
        publisher_confirms=True, on_return_raises=True
    )
    return channel


async def _publish(channel: AbstractChannel, exchange: str, envelope: Envelope[Any]) -> None:
    from aiormq.exceptions import DeliveryError

    from sagaline.messaging.publish import publish_envelope

    try:
        await publish_envelope(channel, exchange, envelope)
    except DeliveryError:
        raise DemoError(
            f"{envelope.type} was not routed to any queue; is the orchestrator up?"
        ) from None


@dataclass(frozen=True)
class _Row:
    saga_id: uuid.UUID
    state: str
    finished: bool
    reason: str | None
    data: dict[str, Any]


async def _read(engine: AsyncEngine, saga_ids: Iterable[uuid.UUID]) -> list[_Row]:
    from sqlalchemy import select

    from orchestrator.store.tables import instances

    query = select(
        instances.c.id,
        instances.c.state,
        instances.c.finished_at,
        instances.c.runtime["reason"].astext,
        instances.c.data,
    ).where(instances.c.id.in_(list(saga_ids)))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    except Exception as exc:
        raise DemoError(
            f"reading saga states failed ({type(exc).__name__}); is the schema migrated?"
        ) from None
    return [_Row(r[0], r[1], r[2] is not None, r[3], r[4]) for r in rows]


def _record(progress: DemoProgress, rows: Iterable[_Row]) -> None:
    for row in rows:
        progress.states[row.saga_id] = row.state
        if row.reason is not None:
            progress.reasons[row.saga_id] = row.reason
        if row.finished:
            progress.finished.add(row.saga_id)


async def _answer(
    channel: AbstractChannel,
    exchange: str,
    progress: DemoProgress,
    rows: Iterable[_Row],
    approver: str,
    on_step: Callable[[str], None],
) -> None:
    """Answer every pending role of every saga waiting for approvals, once per role."""
    from orchestrator.documents_lookup import DocumentSaga, answer

    by_id = {d.saga_id: d for d in progress.scenario.documents}
    for row in rows:
        saga = DocumentSaga.from_row(row.saga_id, row.state, row.data)
        if not saga.accepts_answers:
            continue
        document = by_id[row.saga_id]
        for role in saga.pending_roles:
            if (row.saga_id, role) in progress.answered:
                continue
            granted = document.grants(role)
            envelope = answer(saga, role=role, approver=approver, granted=granted)
            await _publish(channel, exchange, envelope)
            progress.answered.add((row.saga_id, role))
            on_step(f"{'approved' if granted else 'rejected'} {document.document_id} as {role}")
