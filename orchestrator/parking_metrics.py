"""Parking-queue depth by queue and reason, sampled by the orchestrator for every consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR
from orchestrator.metrics import SagaMetrics
from sagaline.dlq import ParkingQueues
from sagaline.messaging.errors import error_summary
from sagaline.service import Resources

log = logging.getLogger("sagaline.metrics")


class ParkingSampler:
    def __init__(self, resources: Resources, metrics: SagaMetrics, interval: float = 30.0) -> None:
        self.resources = resources
        self.metrics = metrics
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._known: set[tuple[str, str]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="parking-sampler")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sample()
            except Exception as exc:
                log.debug("parking sample failed", extra={"error": error_summary(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    async def sample(self) -> None:
        consumers = [ORCHESTRATOR, *WORKER_COMMANDS]
        queues = ParkingQueues(self.resources.connection, self.resources.topology, consumers)
        seen: set[tuple[str, str]] = set()
        for summary in await queues.summaries():
            for reason, count in summary.reasons.items():
                self.metrics.parked.labels(summary.queue, reason).set(count)
                seen.add((summary.queue, reason))
        for gone in self._known - seen:
            self.metrics.parked.labels(*gone).set(0)
        self._known = seen
