"""Composition root of the orchestrator process: store, consumer, relay and timer loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from faststream.asgi import AsgiFastStream
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.envelope import Envelope
from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR, ParkReason, Topology
from orchestrator.engine import EngineConfig, Incoming, UnknownSaga, WrongWorkflow
from orchestrator.intake import BatchIntake
from orchestrator.metrics import DatabaseSampler, SagaMetrics, observe_step
from orchestrator.parking_metrics import ParkingSampler
from orchestrator.relay import OutboxRelay
from orchestrator.store.step import Clock, SagaStore, StepResult, UnexpectedMessage, utcnow
from orchestrator.timers import TimerLoop
from orchestrator.workflows import WORKFLOWS
from sagaline.faults import crash_point
from sagaline.messaging.batching import QueueBatches
from sagaline.messaging.declare import declare_consumer
from sagaline.messaging.errors import PermanentMessageError
from sagaline.service import Background, Resources, build_service, consume_in_batches
from sagaline.settings import Settings
from sagaline.tls import db_connect_args

TRACE_HEADERS = ("traceparent", "tracestate")
_tracer = trace.get_tracer("sagaline.orchestrator")


def event_bindings(topology: Topology) -> list[tuple[str, str]]:
    return sorted(
        {
            (topology.events_exchange, event)
            for m in WORKFLOWS.values()
            for event in m.consumed_events
        }
    )


def build_store(
    settings: Settings,
    engine: AsyncEngine,
    *,
    clock: Clock = utcnow,
    on_conflict: Callable[[], None] | None = None,
) -> SagaStore:
    """The one way a SagaStore is wired (the process and the operator CLI share it): the
    workflows it runs and the step timeout, which an operator's compensate schedules with."""
    return SagaStore(
        engine,
        settings.topology,
        EngineConfig(step_timeout=settings.step_timeout),
        WORKFLOWS,
        clock=clock,
        on_conflict=on_conflict,
    )


class OrchestratorProcess:
    """The per-delivery step: map engine refusals onto parking reasons; metrics and a span."""

    def __init__(self, store: SagaStore, metrics: SagaMetrics) -> None:
        self.store = store
        self.metrics = metrics

    async def __call__(self, envelope: Envelope[Any], delivery: AbstractIncomingMessage) -> None:
        headers = delivery.headers or {}
        trace_headers = {k: str(headers[k]) for k in TRACE_HEADERS if k in headers}
        with _tracer.start_as_current_span(
            "saga transition", attributes={"saga.id": str(envelope.correlation_id)}
        ) as span:
            result = await self._step(envelope, trace_headers)
            crash_point("orchestrator.after_commit_before_ack")
            decision = result.decision
            if decision is None:
                span.set_attribute("saga.duplicate", True)
                return
            span.set_attributes(
                {
                    "saga.workflow": result.workflow or "",
                    "saga.outcome": decision.outcome.value,
                    "saga.from_state": decision.from_state or "",
                    "saga.to_state": decision.to_state,
                    "messaging.message.type": envelope.type,
                }
            )
        self.observe(result)

    def observe(self, result: StepResult) -> None:
        if result.decision is None or result.workflow is None or result.at is None:
            return
        machine = WORKFLOWS[result.workflow]
        observe_step(
            self.metrics,
            result.workflow,
            result.decision,
            result.previous_update,
            result.at,
            machine.compensating,
            machine.compensation_failed,
        )

    async def _step(self, envelope: Envelope[Any], trace_headers: dict[str, str]) -> StepResult:
        try:
            return await self.store.handle(
                Incoming.from_envelope(envelope), trace_headers=trace_headers
            )
        except UnexpectedMessage as exc:
            raise PermanentMessageError(ParkReason.UNEXPECTED_TYPE, str(exc)) from None
        except UnknownSaga as exc:
            raise PermanentMessageError(ParkReason.UNKNOWN_SAGA, str(exc)) from None
        except WrongWorkflow as exc:
            raise PermanentMessageError(ParkReason.WRONG_WORKFLOW, str(exc)) from None


class Orchestrator:
    """Holds the parts the app builds, so tests and tools can reach the store and loops."""

    def __init__(self, settings: Settings, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.store: SagaStore | None = None
        self.metrics: SagaMetrics | None = None
        self.process: OrchestratorProcess | None = None
        self.intake: QueueBatches | None = None
        self.relay: OutboxRelay | None = None
        self.timers: TimerLoop | None = None

    def build(self) -> AsgiFastStream:
        return build_service(
            self.settings,
            ORCHESTRATOR,
            event_bindings,
            self._make_process,
            self._make_background,
            prepare=self._declare_workers,
        )

    async def _declare_workers(self, resources: Resources) -> None:
        # Declaring worker queues here makes commands routable even before a worker first
        # starts: they wait in the queue instead of being returned to the relay.
        topology = resources.topology
        for worker, commands in WORKER_COMMANDS.items():
            bindings = [(topology.commands_exchange, c.message_type) for c in commands]
            await declare_consumer(resources.channel, topology, worker, bindings)

    def _make_process(self, resources: Resources) -> OrchestratorProcess:
        self.metrics = SagaMetrics(resources.registry)
        self.store = build_store(
            self.settings,
            resources.engine,
            clock=self.clock,
            on_conflict=self.metrics.conflicts.inc,
        )
        self.process = OrchestratorProcess(self.store, self.metrics)
        return self.process

    def _make_background(self, resources: Resources) -> Sequence[Background]:
        assert self.store is not None
        assert self.metrics is not None
        self.relay = OutboxRelay(
            resources.engine,
            resources.connection,
            commands_exchange=resources.topology.commands_exchange,
            batch_size=self.settings.relay_batch_size,
            poll_seconds=self.settings.relay_poll_seconds,
            clock=self.clock,
            on_published=self.metrics.outbox_published.inc,
            listener_connect_args=db_connect_args(self.settings),
        )
        self.timers = TimerLoop(
            self.store,
            poll_seconds=self.settings.timer_poll_seconds,
            batch_size=self.settings.timer_batch_size,
            on_fired=self.metrics.timer_lag.observe,
        )
        sampler = DatabaseSampler(
            resources.engine, self.metrics, interval=self.settings.metrics_interval_seconds
        )
        parking = ParkingSampler(
            resources, self.metrics, interval=self.settings.parking_scan_seconds
        )
        assert self.process is not None
        self.intake = consume_in_batches(
            resources,
            ORCHESTRATOR,
            BatchIntake(
                self.store,
                resources.handler,
                observe=self.process.observe,
                dispatch=self.relay.dispatch,
            ),
        )
        # Started last and stopped first: batches in hand finish while relay and timers run.
        return (self.relay, self.timers, sampler, parking, self.intake)


def build_app(settings: Settings, clock: Clock = utcnow) -> AsgiFastStream:
    return Orchestrator(settings, clock).build()
