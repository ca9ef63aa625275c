"""Composition root of the orchestrator process: store, consumer, relay and timer loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from faststream.asgi import AsgiFastStream

from contracts.envelope import Envelope
from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR, ParkReason, Topology
from orchestrator.engine import EngineConfig, Incoming, UnknownSaga, WrongWorkflow
from orchestrator.relay import OutboxRelay
from orchestrator.store.step import Clock, SagaStore, UnexpectedMessage, utcnow
from orchestrator.timers import TimerLoop
from orchestrator.workflows import WORKFLOWS
from sagaline.messaging.declare import declare_consumer
from sagaline.messaging.errors import PermanentMessageError
from sagaline.service import Background, Resources, build_service
from sagaline.settings import Settings

TRACE_HEADERS = ("traceparent", "tracestate")


def event_bindings(topology: Topology) -> list[tuple[str, str]]:
    return sorted(
        {
            (topology.events_exchange, event)
            for m in WORKFLOWS.values()
            for event in m.consumed_events
        }
    )


class OrchestratorProcess:
    """The per-delivery step: map engine refusals onto parking reasons."""

    def __init__(self, store: SagaStore) -> None:
        self.store = store

    async def __call__(self, envelope: Envelope[Any], delivery: AbstractIncomingMessage) -> None:
        headers = delivery.headers or {}
        trace = {k: str(headers[k]) for k in TRACE_HEADERS if k in headers}
        try:
            await self.store.handle(Incoming.from_envelope(envelope), trace_headers=trace)
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
        self.store = SagaStore(
            resources.engine,
            resources.topology,
            EngineConfig(step_timeout=self.settings.step_timeout),
            clock=self.clock,
        )
        return OrchestratorProcess(self.store)

    def _make_background(self, resources: Resources) -> Sequence[Background]:
        assert self.store is not None
        self.relay = OutboxRelay(
            resources.engine,
            resources.channel,
            commands_exchange=resources.topology.commands_exchange,
            batch_size=self.settings.relay_batch_size,
            poll_seconds=self.settings.relay_poll_seconds,
            clock=self.clock,
        )
        self.timers = TimerLoop(
            self.store,
            poll_seconds=self.settings.timer_poll_seconds,
            batch_size=self.settings.timer_batch_size,
        )
        return (self.relay, self.timers)


def build_app(settings: Settings, clock: Clock = utcnow) -> AsgiFastStream:
    return Orchestrator(settings, clock).build()
