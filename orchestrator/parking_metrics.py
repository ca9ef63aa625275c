"""Parking-queue depth by queue and reason, sampled by the orchestrator for every consumer."""

from __future__ import annotations

from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR
from orchestrator.metrics import SagaMetrics
from sagaline.background import BackgroundLoop
from sagaline.messaging.parking import ParkingQueues
from sagaline.service import Resources


class ParkingSampler(BackgroundLoop):
    name = "parking-sampler"

    def __init__(self, resources: Resources, metrics: SagaMetrics, interval: float = 30.0) -> None:
        super().__init__(interval)
        self.resources = resources
        self.metrics = metrics
        self._known: set[tuple[str, str]] = set()

    async def run_once(self) -> bool:
        await self.sample()
        return False

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
