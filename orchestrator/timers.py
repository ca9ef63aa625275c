"""The durable timer loop: due timer rows become timer triggers of their sagas.

Each timer fires in the same transaction as the step it causes, and that transaction deletes
the exact timer row (name and message id) it fires: a cancelled or rescheduled timer has no
such row any more and never fires; a timer due while no orchestrator ran fires once on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import select

from orchestrator.engine import Incoming
from orchestrator.store.step import Clock, SagaStore
from orchestrator.store.tables import timers
from sagaline.messaging.errors import PermanentMessageError, error_summary

log = logging.getLogger("sagaline.timers")


class TimerLoop:
    def __init__(
        self,
        store: SagaStore,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 200,
        on_fired: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.on_fired = on_fired
        """Called with each fired timer's lag in seconds (metrics)."""
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.fired = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def clock(self) -> Clock:
        return self.store.clock

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="timer-loop")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)

    async def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                fired = await self.fire_due()
                backoff = 0.2
            except Exception as exc:
                log.warning("timer round failed", extra={"error": error_summary(exc)})
                fired = 0
                await self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if fired < self.batch_size:
                await self._pause(self.poll_seconds)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

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
                fired += 1
                if self.on_fired is not None:
                    self.on_fired((now - row.due_at).total_seconds())
        self.fired += fired
        return fired
