"""The durable timer loop: due timer rows become timer triggers of their sagas.

Each timer fires in the same transaction as the step it causes, and that transaction deletes
the exact timer row (name and message id) it fires: a cancelled or rescheduled timer has no
such row any more and never fires; a timer due while no orchestrator ran fires once on start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select

from orchestrator.engine import Incoming
from orchestrator.store.step import Clock, SagaStore
from orchestrator.store.tables import timers
from sagaline.background import BackgroundLoop
from sagaline.faults import crash_point
from sagaline.messaging.errors import PermanentMessageError

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
        """Fire every timer due now (up to one batch), earliest first; returns how many fired."""
        now = self.clock()
        async with self.store.engine.connect() as conn:
            due = (
                await conn.execute(
                    select(timers.c.saga_id, timers.c.name, timers.c.message_id, timers.c.due_at)
                    .where(timers.c.due_at <= now)
                    .order_by(timers.c.due_at, timers.c.saga_id)
                    .limit(self.batch_size)
                )
            ).all()
        fired = 0
        for row in due:
            incoming = Incoming.timer(row.saga_id, row.name, row.message_id)
            try:
                result = await self.store.handle(incoming, actor="timer", timer_guard=True)
            except PermanentMessageError as exc:
                log.error(
                    "timer could not fire",
                    extra={"saga_id": str(row.saga_id), "error": exc.summary},
                )
                continue
            if not result.duplicate:
                crash_point("orchestrator.timer_after_fire")
                fired += 1
                if self.on_fired is not None:
                    self.on_fired((now - row.due_at).total_seconds())
        self.fired += fired
        return fired
