"""Statistics the sections report: percentiles and rates from counters sampled over time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int]:
    return {
        "count": len(values_ms),
        "p50_ms": percentile(values_ms, 50),
        "p95_ms": percentile(values_ms, 95),
        "p99_ms": percentile(values_ms, 99),
        "max_ms": max(values_ms),
        "mean_ms": sum(values_ms) / len(values_ms),
    }


@dataclass(frozen=True)
class Sample:
    at: float
    """Seconds (monotonic)."""
    count: int


def crossing(samples: Sequence[Sample], level: float) -> float | None:
    """When the counter first reached `level`, interpolated between the samples around it."""
    previous: Sample | None = None
    for sample in samples:
        if sample.count >= level:
            if previous is None or sample.count == previous.count:
                return sample.at
            share = (level - previous.count) / (sample.count - previous.count)
            return previous.at + share * (sample.at - previous.at)
        previous = sample
    return None


def window_rate(
    samples: Sequence[Sample], total: int, low: float = 0.1, high: float = 0.9
) -> float | None:
    """Steady-state rate: counts per second between reaching low*total and high*total.

    Leaves out the ramp-up (connections, caches, the first batches) and the tail (the last
    sagas finishing one by one), which depend on the run's size more than on the system.
    """
    if total <= 0 or not 0 <= low < high <= 1:
        raise ValueError("need total > 0 and 0 <= low < high <= 1")
    start = crossing(samples, low * total)
    end = crossing(samples, high * total)
    if start is None or end is None or end <= start:
        return None
    return (high - low) * total / (end - start)


def span_rate(count: int, first: float, last: float) -> float | None:
    """Events per second between the first and the last of `count` timestamped events."""
    if count < 2 or last <= first:
        return None
    return (count - 1) / (last - first)


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def median_round(rounds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The round with the median `key` (the lower middle for an even count), plus every
    round's `key` under `rounds`."""
    ordered = sorted(rounds, key=lambda r: r.get(key) or 0.0)
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds"] = [r.get(key) for r in rounds]
    return chosen
