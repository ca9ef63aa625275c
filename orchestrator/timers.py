"""The durable timer loop: due timer rows become timer triggers of their sagas.

Each timer fires in the same transaction as the step it causes, and that transaction deletes
the exact timer row (name and message id) it fires: a cancelled or rescheduled timer has no
such row any more and never fires; a timer due while no orchestrator ran fires once on start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.store.saga_store import Clock, SagaStore
from sagaline.background import BackgroundLoop
from sagaline.faults import crash_point

log = logging.getLogger("sagaline.timers")


class TimerLoop(BackgroundLoop):
    name = "timer-loop"

    def __init__(
        self,
        store: SagaStore,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 200,
        on_fired: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(poll_seconds)
        self.store = store
        self.batch_size = batch_size
        self.on_fired = on_fired
        """Called with each fired timer's lag in seconds (metrics)."""
        self.fired = 0

    @property
    def clock(self) -> Clock:
        return self.store.clock

    async def run_once(self) -> bool:
        return await self.fire_due() >= self.batch_size

    async def fire_due(self) -> int:
        """Fire timers due now (up to one batch), earliest first; returns how many fired.

        Claiming (DELETE ... SKIP LOCKED) and firing share one transaction, so several loops
        never fire the same timer and a crash before commit leaves the timers in place.
        """
        fired = await self.store.fire_due_timers(self.batch_size)
        for timer in fired:
            crash_point("orchestrator.timer_after_fire")
            if self.on_fired is not None and timer.result.at is not None:
                self.on_fired((timer.result.at - timer.due_at).total_seconds())
        self.fired += len(fired)
        return len(fired)
