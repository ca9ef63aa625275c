"""Composition root of the orchestrator process: store, consumer, relay and timer loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from aio_pika.abc import AbstractChannel
from faststream.asgi import AsgiFastStream
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.registry import reply_types
from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR, Topology
from orchestrator.contract_routes import mount_contract_routes
from orchestrator.engine import EngineConfig
from orchestrator.engine.registry import Workflows
from orchestrator.intake import BatchIntake, SingleIntake, StepObserver
from orchestrator.metrics import DatabaseSampler, SagaMetrics
from orchestrator.parking_metrics import ParkingSampler
from orchestrator.relay import OutboxRelay
from orchestrator.store.saga_store import Clock, SagaStore, utcnow
from orchestrator.store.snapshot_cache import SnapshotCache
from orchestrator.timers import TimerLoop
from orchestrator.workflows import WORKFLOWS
from orchestrator.workflows.loading import load_workflows
from sagaline.messaging.batching import QueueBatches
from sagaline.messaging.declare import declare_at_startup, declare_consumer
from sagaline.messaging.senders import SenderPolicy
from sagaline.service import Background, Resources, build_service, consume_in_batches
from sagaline.settings import Settings
from sagaline.tls import db_connect_args


def event_bindings(topology: Topology, workflows: Workflows = WORKFLOWS) -> list[tuple[str, str]]:
    """The orchestrator queue's bindings: the events of every loaded version of every workflow
    (sagas of an older version still wait for theirs)."""
    return sorted(
        {
            (topology.events_exchange, event)
            for m in workflows.machines()
            for event in m.consumed_events
        }
    )


def build_store(
    settings: Settings,
    engine: AsyncEngine,
    *,
    clock: Clock = utcnow,
    on_conflict: Callable[[], None] | None = None,
    on_guess: Callable[[bool], None] | None = None,
    workflows: Workflows | None = None,
) -> SagaStore:
    """The one way a SagaStore is wired (the process and the operator CLI share it): the
    workflows it runs and the step timeout, which an operator's compensate schedules with."""
    return SagaStore(
        engine,
        settings.topology,
        EngineConfig(step_timeout=settings.step_timeout),
        workflows if workflows is not None else load_workflows(settings.workflows),
        clock=clock,
        dispatch_lease=timedelta(seconds=settings.dispatch_lease_seconds),
        on_conflict=on_conflict,
        snapshots=SnapshotCache(settings.snapshot_cache_size, on_guess),
    )


class Orchestrator:
    """Holds the parts the app builds, so tests and tools can reach the store and loops."""

    def __init__(self, settings: Settings, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.workflows = load_workflows(settings.workflows)
        """Every version of every workflow this process runs (SAGALINE_WORKFLOWS)."""
        self.store: SagaStore | None = None
        self.metrics: SagaMetrics | None = None
        self.process: SingleIntake | None = None
        self.intake: QueueBatches | None = None
        self.relay: OutboxRelay | None = None
        self.timers: TimerLoop | None = None

    def build(self) -> AsgiFastStream:
        app = build_service(
            self.settings,
            ORCHESTRATOR,
            lambda topology: event_bindings(topology, self.workflows),
            self._make_process,
            self._make_background,
            prepare=self._declare_workers,
            senders=SenderPolicy(
                allowed=self.settings.reply_senders,
                own_user=self.settings.broker_user,
                guarded_types=frozenset(t.message_type for t in reply_types()),
            ),
        )
        # The published contract of this build, for teams that publish to it.
        mount_contract_routes(app, self.settings.topology)
        return app

    async def _declare_workers(self, resources: Resources) -> None:
        # Declaring worker queues here makes commands routable even before a worker first
        # starts: they wait in the queue instead of being returned to the relay.
        topology = resources.topology

        async def declare(channel: AbstractChannel) -> None:
            for worker, commands in WORKER_COMMANDS.items():
                bindings = [(topology.commands_exchange, c.message_type) for c in commands]
                await declare_consumer(channel, topology, worker, bindings)

        await declare_at_startup(
            resources.connection, declare, within=self.settings.startup_declare_seconds
        )

    def _make_process(self, resources: Resources) -> SingleIntake:
        self.metrics = SagaMetrics(resources.registry)
        self.store = build_store(
            self.settings,
            resources.engine,
            clock=self.clock,
            on_conflict=self.metrics.conflicts.inc,
            on_guess=self.metrics.observe_guess,
            workflows=self.workflows,
        )
        self.observer = StepObserver(self.metrics, self.workflows)
        self.process = SingleIntake(self.store, self.observer)
        return self.process

    def _make_background(self, resources: Resources) -> Sequence[Background]:
        assert self.store is not None
        assert self.metrics is not None
        self.relay = OutboxRelay(
            resources.engine,
            resources.connection,
            commands_exchange=resources.topology.commands_exchange,
            user_id=self.settings.broker_user,
            batch_size=self.settings.relay_batch_size,
            poll_seconds=self.settings.relay_poll_seconds,
            clock=self.clock,
            on_published=self.metrics.outbox_published.inc,
            listener_connect_args=db_connect_args(self.settings),
            dispatch_lease_seconds=self.settings.dispatch_lease_seconds,
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
        self.process.sweep = self.relay.sweep
        self.store.pending_marks = self.relay.marks
        self.intake = consume_in_batches(
            resources,
            ORCHESTRATOR,
            BatchIntake(
                self.store,
                resources.handler,
                observe=self.observer,
                dispatch=self.relay.dispatch,
                sweep=self.relay.sweep,
            ),
        )
        # Started last and stopped first: batches in hand finish while relay and timers run.
        return (self.relay, self.timers, sampler, parking, self.intake)


def build_app(settings: Settings, clock: Clock = utcnow) -> AsgiFastStream:
    return Orchestrator(settings, clock).build()
