"""Garbage collection in a long-running service: the startup heap frozen, pauses measured.

CPython's cyclic collector walks every tracked container in the generations it collects, with
the event loop stopped. After startup a service holds about 130,000 such objects (modules,
pydantic schemas, SQLAlchemy, aio-pika) that live as long as the process, and a full collection
walks them all: 25-45 ms on the 2-core development machine, several times a minute under load.
Measured in one `sagaline bench --only latency` run at 985 transitions/s (orchestrator, 20 s):
7 full collections, 277 ms in all, the longest 44 ms, each landing in the latency tail of every
message in flight. `gc.freeze()` after startup moves those objects to a permanent generation
that collections skip: 12 full collections, 18 ms in all, the longest 2.3 ms, in the same run
with the freeze. Reference counting still frees frozen objects; only cycles among them would
stay, and the startup heap does not become garbage.

The youngest generation is collected every `SAGALINE_GC_YOUNG_THRESHOLD` net new container
objects (CPython's 700 by default, ours 10,000). A batch of 64 messages builds thousands of
objects that live until the batch is done and then die by reference counting. At 700 the
collector walked them mid-batch, promoted them, and walked them again in the older generations:
measured from the orchestrator's pause histogram in `sagaline bench --only e2e --e2e-orders
30000` (2026-12-08), 6.9-8.4 s of pauses at 700 against 0.1-0.2 s at 10,000, and orchestrator
CPU per saga 1.90-2.10 ms against 1.71-2.01. What the higher threshold keeps longer is only
garbage in cycles, at most 10,000 objects of it: peak RSS was the same (113 MB orchestrator,
97-98 MB per worker; 100,000 added 6 MB per worker for no further gain).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def freeze_startup_heap() -> int:
    """Collect what startup left behind, then freeze the rest; returns the frozen count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def set_young_threshold(threshold: int) -> int:
    """Collect the youngest generation every `threshold` net new objects; returns the old value.

    The older generations keep their thresholds: they count collections of the one below.
    """
    young, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
    return young


class YoungThreshold:
    """The service's young-generation threshold, applied while it runs and undone on stop
    (a process may run a service and then go on, as a test does), exported as a gauge."""

    def __init__(self, threshold: int, registry: CollectorRegistry) -> None:
        self.threshold = threshold
        self.gauge = Gauge(
            "sagaline_gc_young_threshold",
            "Net new objects between two collections of the youngest generation, in effect.",
            registry=registry,
        )
        self._before: int | None = None

    def apply(self) -> None:
        if self._before is None:
            self._before = set_young_threshold(self.threshold)
            self.gauge.set(self.threshold)

    def restore(self) -> None:
        if self._before is not None:
            set_young_threshold(self._before)
            self._before = None


class GcPauses:
    """How long the cyclic collector stops the process, per generation (a gc callback)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "sagaline_gc_pause_seconds",
            "Time the event loop stood still in a cyclic garbage collection, by generation.",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        self.frozen = Gauge(
            "sagaline_gc_frozen_objects",
            "Objects moved out of the collector's reach after startup (gc.freeze).",
            registry=registry,
        )
        self._started = 0.0

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def freeze(self) -> int:
        count = freeze_startup_heap()
        self.frozen.set(count)
        return count

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._started
            self.seconds.labels(str(info["generation"])).observe(pause)
