"""Batched intake: the orchestrator's hot path from its queue to committed saga steps.

Deliveries are collected into batches (up to `batch_size` messages or `batch_wait` seconds)
and each batch is applied in one database transaction, then its deliveries are acknowledged.
This is the measured way to approach the broker's own ceiling (on 2 cores, ~3.1k steps/s
batched against ~1.0k per message): per-message transactions cost one fsync each, and
FastStream's per-message path costs ~2x raw aio-pika.

Every guarantee of the per-message path holds: a message is acked only after its step
committed; permanent refusals are parked with their reason; a batch that fails for any other
reason is retried message by message through the ordinary DeliveryHandler (retry ladder,
parking); while the database is away the batch is held, not burned through the retries.

After the acks the batch publishes the commands its steps wrote to the outbox itself
(`dispatch`, from the rows it has in memory), instead of waking the relay and waiting for its
next round: the event-to-command latency is then one publish with confirm after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from contracts.envelope import Envelope
from contracts.topology import ParkReason
from orchestrator.engine import (
    Incoming,
    OperatorRefused,
    UnexpectedMessage,
    UnknownSaga,
    WrongWorkflow,
)
from orchestrator.engine.registry import Workflows
from orchestrator.metrics import SagaMetrics, observe_step
from orchestrator.store.plan import OutboxMessage
from orchestrator.store.saga_store import BatchResult, SagaStore, StepResult
from sagaline.faults import crash_point
from sagaline.messaging.acks import ack
from sagaline.messaging.batching import apply_batch, parse_or_park, settle_one_by_one
from sagaline.messaging.delivery import DeliveryHandler
from sagaline.messaging.errors import PermanentMessageError, error_summary
from sagaline.messaging.stages import mark, note, timed

log = logging.getLogger("sagaline.intake")

TRACE_HEADERS = ("traceparent", "tracestate")

REFUSALS: dict[type[Exception], ParkReason] = {
    UnexpectedMessage: ParkReason.UNEXPECTED_TYPE,
    UnknownSaga: ParkReason.UNKNOWN_SAGA,
    WrongWorkflow: ParkReason.WRONG_WORKFLOW,
    OperatorRefused: ParkReason.UNEXPECTED_TYPE,
}


def park_reason(refusal: Exception) -> ParkReason:
    for kind, reason in REFUSALS.items():
        if isinstance(refusal, kind):
            return reason
    return ParkReason.UNEXPECTED_TYPE


def trace_headers(delivery: AbstractIncomingMessage) -> dict[str, str]:
    headers = delivery.headers or {}
    return {k: str(headers[k]) for k in TRACE_HEADERS if k in headers}


class StepObserver:
    """Counts a committed step in the saga metrics (both intake paths and nothing else)."""

    def __init__(self, metrics: SagaMetrics, workflows: Workflows) -> None:
        self.metrics = metrics
        self.workflows = workflows

    def __call__(self, result: StepResult) -> None:
        if result.decision is None or result.workflow is None or result.at is None:
            return
        machine = self.workflows[result.workflow]
        observe_step(
            self.metrics,
            result.workflow,
            result.decision,
            result.previous_update,
            result.at,
            machine.compensating,
            machine.compensation_failed,
        )


def _caused(result: BatchResult) -> bool:
    return isinstance(result, StepResult) and bool(result.decision and result.decision.outgoing)


class SingleIntake:
    """The one-by-one path (the DeliveryHandler's Process): one event, one `store.handle`.

    Used for the messages of a batch that failed as a whole. It shares the batch path's trace
    headers and refusal mapping; the store's plan opens the "saga transition" span, so this
    opens none of its own.
    """

    def __init__(
        self,
        store: SagaStore,
        observe: Callable[[StepResult], None],
        sweep: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.observe = observe
        self.sweep = sweep
        """As BatchIntake's: a duplicate here may be the step of a batch whose commit went
        through while the batch failed (it is then retried here one by one), whose rows nobody
        dispatched."""

    async def __call__(self, envelope: Envelope[Any], delivery: AbstractIncomingMessage) -> None:
        try:
            result = await self.store.handle(
                Incoming.from_envelope(envelope), trace_headers=trace_headers(delivery)
            )
        except tuple(REFUSALS) as refusal:
            raise PermanentMessageError(park_reason(refusal), str(refusal)) from None
        crash_point("orchestrator.after_commit_before_ack")
        self.observe(result)
        if result.duplicate and self.sweep is not None:
            self.sweep()


class BatchIntake:
    """The orchestrator's BatchProcessor: a batch of events is one `handle_batch` step."""

    def __init__(
        self,
        store: SagaStore,
        handler: DeliveryHandler,
        *,
        observe: Callable[[StepResult], None],
        dispatch: Callable[[Sequence[OutboxMessage]], Awaitable[int]] | None = None,
        sweep: Callable[[], None] | None = None,
        outage_backoff: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        self.store = store
        self.handler = handler
        """Parks refusals, and handles a failed batch's messages one by one."""
        self.observe = observe
        self.dispatch = dispatch
        """Publishes the batch's committed outbox rows; None leaves them to the relay."""
        self.sweep = sweep
        """Wakes the relay to publish every unpublished row, leased ones included. Called when a
        batch holds a duplicate: the first commit of that message may have gone through while
        its client saw a lost connection (the batch was then held and retried, and the retry
        found it done), or another replica may have died between its commit and its dispatch.
        Either way nobody dispatched that step's rows; without the sweep they would wait for
        their lease to run out and the relay's poll."""
        self.outage_backoff = outage_backoff

    async def process(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        parsed = await parse_or_park(self.handler, deliveries)
        if not parsed:
            return
        mark("parsed")
        results = await self._apply(parsed)
        if isinstance(results, Exception):  # not a refusal, not an outage
            await settle_one_by_one(self.handler, parsed, results)
            return
        mark("committed")
        outgoing: list[OutboxMessage] = []
        done: list[AbstractIncomingMessage] = []
        for (delivery, envelope), result in zip(parsed, results, strict=True):
            if isinstance(result, StepResult):
                crash_point("orchestrator.after_commit_before_ack")
                self.observe(result)
                done.append(delivery)
                outgoing.extend(result.outbox)
            else:
                await self.handler.park(
                    delivery, park_reason(result), error_summary(result), envelope
                )
        await ack(done)  # one frame for the batch where the order of batches allows
        mark("acked")
        if timed():  # bench: which deliveries' latency ends at the dispatch's confirm
            note("caused", [_caused(r) for r in results] if len(parsed) == len(deliveries) else [])
        if self.dispatch is not None and outgoing:
            await self.dispatch(outgoing)
        if self.sweep is not None and any(
            isinstance(result, StepResult) and result.duplicate for result in results
        ):
            self.sweep()

    async def _apply(
        self, parsed: list[tuple[AbstractIncomingMessage, Envelope[Any]]]
    ) -> list[BatchResult] | Exception:
        incomings = [Incoming.from_envelope(envelope) for _, envelope in parsed]
        headers = [trace_headers(delivery) for delivery, _ in parsed]
        return await apply_batch(
            lambda: self.store.handle_batch(
                incomings, trace_headers=headers, notify_relay=self.dispatch is None, guess=True
            ),
            stopping=self.handler.stopping,
            backoff=self.outage_backoff,
        )
