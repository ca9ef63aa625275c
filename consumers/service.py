"""A worker's composition root: its FastStream app, built from its WorkerSpec and settings.

consumers.runtime holds what a worker does with a command and consumers.batch how a batch of
them shares a transaction; this module wires both to the broker, the database and the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from faststream.asgi import AsgiFastStream
from faststream.rabbit import ExchangeType, RabbitExchange
from prometheus_client import Counter

from consumers.batch import WorkerBatch
from consumers.faults import FaultSwitch
from consumers.runtime import WorkerProcess, WorkerSpec
from consumers.settings import WorkerSettings
from contracts.registry import reply_types
from contracts.topology import ORCHESTRATOR
from sagaline.messaging.declare import declare_at_startup, declare_consumer
from sagaline.messaging.delivery import Process
from sagaline.messaging.senders import SenderPolicy
from sagaline.service import Background, Resources, build_service, consume_in_batches
from sagaline.settings import Settings

log = logging.getLogger(__name__)


def build_worker(
    spec: WorkerSpec, settings: Settings, config: WorkerSettings | None = None
) -> AsgiFastStream:
    """The worker's app; `config` defaults to WorkerSettings() read from the environment."""
    config = config if config is not None else WorkerSettings()
    handlers = spec.handlers(config)
    faults = FaultSwitch(frozenset(config.fail_commands))

    processes: list[WorkerProcess] = []

    def make_process(resources: Resources) -> Process:
        if faults.active:
            log.warning(
                "FAULT INJECTION ACTIVE: these commands always fail",
                extra={"consumer": spec.name, "fail_commands": sorted(faults.fail_commands)},
            )
        events = RabbitExchange(
            resources.topology.events_exchange,
            type=ExchangeType.TOPIC,
            durable=True,
            declare=False,  # declared with the consumer's queues at start-up
        )
        handled = Counter(
            "sagaline_commands_handled_total",
            "Commands handled and answered; duplicate=true when the stored reply was re-sent.",
            ["command", "reply", "duplicate"],
            registry=resources.registry,
        )
        processes.append(
            WorkerProcess(
                spec,
                handlers,
                resources.engine,
                resources.broker,
                events,
                faults,
                handled,
                sender=settings.broker_user,
            )
        )
        return processes[-1]

    def make_background(resources: Resources) -> Sequence[Background]:
        return [
            consume_in_batches(resources, spec.name, WorkerBatch(processes[-1], resources.handler))
        ]

    return build_service(
        settings,
        spec.name,
        spec.bindings,
        make_process,
        make_background,
        prepare=declare_reply_destination,
        senders=SenderPolicy(allowed=settings.command_senders, own_user=settings.broker_user),
    )


async def declare_reply_destination(resources: Resources) -> None:
    """Declare the orchestrator's queue bound to every reply type, as the orchestrator does.

    Replies are published with `mandatory`: without this, a worker that starts (and answers)
    before the orchestrator ever ran would see its replies returned as unroutable. Declaring
    is idempotent and the arguments come from the same contracts, so both sides agree.
    """
    topology = resources.topology
    replies = [(topology.events_exchange, t.message_type) for t in reply_types()]
    await declare_at_startup(
        resources.connection,
        lambda channel: declare_consumer(channel, topology, ORCHESTRATOR, replies),
        within=resources.settings.startup_declare_seconds,
    )
