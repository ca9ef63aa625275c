"""A background loop that runs beside a consumer: relay, timers, metric samplers.

One shape for all of them: `run_once()` does one round and says whether more work is waiting;
the loop sleeps `interval` between rounds unless woken, backs off after errors (logging only the
error's kind), and stops promptly when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sagaline.messaging.errors import error_summary

log = logging.getLogger("sagaline.background")


class BackgroundLoop:
    name = "background"
    max_backoff = 10.0

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> bool:
        """One round of work; True when more is waiting and the next round should start now."""
        raise NotImplementedError

    async def on_error(self) -> None:
        """Hook after a failed round (e.g. drop a connection that may be broken)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=10)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                more = await self.run_once()
                backoff = 0.2
            except Exception as exc:
                log.warning(f"{self.name} round failed", extra={"error": error_summary(exc)})
                await self.on_error()
                await self._pause(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if not more:
                await self._pause(self.interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()
