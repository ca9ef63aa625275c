"""A background loop that runs beside a consumer: relay, timers, metric samplers.

One shape for all of them: `run_once()` does one round and says whether more work is waiting;
the loop sleeps `interval` between rounds unless woken, backs off after errors (logging only the
error's kind, once per run of the same error, and an INFO when a round succeeds again), and
stops promptly when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sagaline.messaging.errors import error_summary

log = logging.getLogger("sagaline.background")


class BackgroundLoop:
    name = "background"
    min_backoff = 0.2
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
        backoff = self.min_backoff
        streak = _FailureStreak(self.name)
        while not self._stopping.is_set():
            try:
                more = await self.run_once()
            except Exception as exc:
                streak.failed(error_summary(exc))
                await self.on_error()
                await self._pause(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            streak.succeeded()
            if not more:
                await self._pause(self.interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()


class _FailureStreak:
    """Logs a run of failed rounds once: during an outage a loop fails every backoff step (a
    dozen times a minute), and a line per round buries the one that says what went wrong. A
    different error within the run is news and is logged again."""

    def __init__(self, loop: str) -> None:
        self.loop = loop
        self.rounds = 0
        self.error: str | None = None

    def failed(self, error: str) -> None:
        self.rounds += 1
        level = logging.DEBUG if error == self.error else logging.WARNING
        self.error = error
        log.log(
            level, f"{self.loop} round failed", extra={"error": error, "failed_rounds": self.rounds}
        )

    def succeeded(self) -> None:
        if self.rounds:
            log.info(f"{self.loop} recovered", extra={"failed_rounds": self.rounds})
        self.rounds, self.error = 0, None
