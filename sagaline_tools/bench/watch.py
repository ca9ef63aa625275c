"""Poll a counter until it reaches a target, keeping (time, count) samples for the rates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sagaline_tools.bench.stats import Sample


class Stalled(RuntimeError):
    """The counter stopped moving (or the deadline passed) before reaching its target."""


async def sample_until(
    fetch: Callable[[], Awaitable[int]],
    target: int,
    *,
    interval: float = 0.2,
    stall_seconds: float = 60.0,
    on_sample: Callable[[int], None] | None = None,
    check: Callable[[], None] | None = None,
    what: str = "counter",
) -> list[Sample]:
    """Samples from the first poll until `fetch()` >= target.

    `check` runs every round and may raise (e.g. a benchmarked process died); the wait fails
    when the count has not changed for `stall_seconds`.
    """
    samples: list[Sample] = []
    last_change = time.monotonic()
    while True:
        count = await fetch()
        now = time.monotonic()
        if samples and count != samples[-1].count:
            last_change = now
        samples.append(Sample(now, count))
        if on_sample is not None:
            on_sample(count)
        if count >= target:
            return samples
        if check is not None:
            check()
        if now - last_change > stall_seconds:
            raise Stalled(f"{what} stuck at {count} of {target} for {stall_seconds:g}s")
        await asyncio.sleep(interval)


Counter = Callable[[], Awaitable[int]]


def cheap_then_exact(cheap: Counter, exact: Counter, target: int) -> Counter:
    """`cheap` while it is below `target`, then `exact`: a cheap reading that may run ahead of
    the truth (e.g. ids skipped by rolled-back transactions) cannot end the wait early."""

    async def fetch() -> int:
        count = await cheap()
        return count if count < target else await exact()

    return fetch


class Metered:
    """A counter that keeps what reading it cost (wall time of each round trip), so that a
    section can report what its own monitoring took from the measured system."""

    def __init__(self, fetch: Counter) -> None:
        self.fetch = fetch
        self.polls = 0
        self.seconds = 0.0

    async def __call__(self) -> int:
        started = time.perf_counter()
        try:
            return await self.fetch()
        finally:
            self.polls += 1
            self.seconds += time.perf_counter() - started

    def report(self, wall_seconds: float) -> dict[str, float]:
        return {
            "polls": self.polls,
            "mean_ms": round(self.seconds / max(1, self.polls) * 1000, 3),
            "share_of_a_core": round(self.seconds / wall_seconds, 4) if wall_seconds > 0 else 0.0,
        }
