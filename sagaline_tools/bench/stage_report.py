"""Per-message latency and where it went, from stage timings (pure: no I/O).

The orchestrator writes one line per batch (sagaline.messaging.stages): when each delivery
arrived, and when the batch was collected, parsed, committed, acknowledged, its commands'
outbox rows claimed, and their publishes confirmed. A delivery whose step sent a command
("caused") has the latency arrival -> confirm, split into the stages below; they add up to it.
The transaction stage is split further into its parts (pool checkout, the read, the planning
in Python, the write with its commit, giving the connection back), which add up to it.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from sagaline_tools.bench.stats import latency_summary, percentile

ORCHESTRATOR_STAGES: tuple[tuple[str, str], ...] = (
    ("wait", "collected"),
    ("parse", "parsed"),
    ("transaction", "committed"),
    ("ack", "acked"),
    ("claim", "claimed"),
    ("confirm", "confirmed"),
)
"""(stage, the mark that ends it): each stage starts where the one before it ended."""

TRANSACTION_PARTS: tuple[tuple[str, str], ...] = (
    ("parsed", "parsed"),
    ("connect", "tx_connected"),
    ("read", "tx_loaded"),
    ("plan", "tx_planned"),
    ("write", "tx_written"),
    ("release", "committed"),
)
"""The transaction stage's parts, marked by orchestrator/store/saga_store.py: from the parsed
batch to a pooled connection, the read (new messages and their sagas), deciding in Python, the
write (one call: inbox, sagas, history, outbox, timers and the commit), giving the connection
back. The first entry is where they start."""

StageTimes = dict[str, float]
"""One message: milliseconds per stage."""


class OrchestratorTimings(NamedTuple):
    messages: list[StageTimes]
    """Per command-causing delivery, its stages."""
    parts: list[StageTimes]
    """Per message (same order), its transaction's parts; {} where the batch has no marks."""
    incomplete: int
    """Batches with commands but no complete timing (fell back to one-by-one handling, or
    whose commands were left to the relay)."""
    arrivals: list[float]
    """Per message (same order), when it arrived (monotonic seconds)."""


def _batches(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The stage log's batches, one JSON object per non-blank line."""
    for line in lines:
        if line.strip():
            yield json.loads(line)


def orchestrator_stages(lines: Iterable[str]) -> OrchestratorTimings:
    """Per command-causing delivery, its stages and its transaction's parts."""
    messages: list[StageTimes] = []
    parts: list[StageTimes] = []
    arrivals: list[float] = []
    incomplete = 0
    for batch in _batches(lines):
        caused: list[bool] = batch.get("caused") or []
        if not any(caused):
            continue
        shared = _spans(batch, ORCHESTRATOR_STAGES)
        if not shared:
            incomplete += 1
            continue
        split = _spans(batch, TRANSACTION_PARTS)
        for arrived, sends in zip(batch["received"], caused, strict=True):
            if sends:
                messages.append({"wait": (batch["collected"] - arrived) * 1000, **shared})
                parts.append(split)
                arrivals.append(arrived)
    return OrchestratorTimings(messages, parts, incomplete, arrivals)


def batching(lines: Iterable[str]) -> dict[str, float] | None:
    """How the deliveries were batched, over every batch of the log: batches per second (from
    the first collection to the last) and deliveries per batch. At a steady rate below the
    orchestrator's ceiling, its CPU follows the batches more than the messages: each batch pays
    its round trips, frames and wake-ups, on caches the other processes have cooled
    (docs/benchmark-log.md, "2026-12-07 day"). None when fewer than two batches were logged."""
    collected: list[float] = []
    deliveries = 0
    for batch in _batches(lines):
        collected.append(batch["collected"])
        deliveries += len(batch["received"])
    span = max(collected, default=0.0) - min(collected, default=0.0)
    if len(collected) < 2 or span <= 0:
        return None
    return {
        "batches": len(collected),
        "per_s": round((len(collected) - 1) / span, 1),
        "mean_size": round(deliveries / len(collected), 2),
    }


def _spans(batch: Mapping[str, Any], marks: Sequence[tuple[str, str]]) -> StageTimes:
    """ms between consecutive marks, named by the later one's stage; {} if one is missing."""
    if any(mark not in batch for _, mark in marks):
        return {}
    return {
        stage: (batch[end] - batch[start]) * 1000
        for (_, start), (stage, end) in itertools.pairwise(marks)
    }


def totals_ms(messages: Sequence[Mapping[str, float]]) -> list[float]:
    """Each message's latency: the sum of its stages."""
    return [sum(m.values()) for m in messages]


def summarize(
    messages: Sequence[Mapping[str, float]],
    parts: Sequence[Mapping[str, float]] = (),
    arrivals: Sequence[float] = (),
) -> dict[str, Any]:
    """Percentiles of the total (the sum of a message's stages); each stage's median; and the
    mean of each stage over the slowest 1% (what the tail is made of). With `parts` (one per
    message), the same two views of the transaction's parts; with `arrivals` (one per
    message), when in the round the slowest 1% arrived (`tail_spread`)."""
    if not messages:
        raise ValueError("no timed messages")
    totals = totals_ms(messages)
    summary: dict[str, Any] = dict(latency_summary(totals))
    if arrivals:
        summary["tail_spread"] = tail_spread(arrivals, totals, summary["p99_ms"])
    slowest = [total >= summary["p99_ms"] for total in totals]
    summary["stages_p50_ms"] = _medians(messages)
    summary["stages_tail_ms"] = _means([m for m, s in zip(messages, slowest, strict=True) if s])
    if parts:
        split = [p for p in parts if p]
        tail = [p for p, s in zip(parts, slowest, strict=True) if s and p]
        if split:
            summary["transaction_parts_p50_ms"] = _medians(split)
        if tail:
            summary["transaction_parts_tail_ms"] = _means(tail)
    return summary


def tail_spread(
    arrivals: Sequence[float], totals: Sequence[float], threshold: float
) -> dict[str, float]:
    """When the slowest messages (total >= `threshold`) arrived, by whole second of the round:
    in how many of its seconds, and the share of them in the busiest second. A stall (the
    machine, the broker or the database pausing) piles the tail into a second or two; steady
    queueing spreads it over the round. A round whose ratio is far off the others' can be
    told apart by this without its stage log."""
    start = min(arrivals)
    slow = Counter(
        int(at - start) for at, total in zip(arrivals, totals, strict=True) if total >= threshold
    )
    return {
        "seconds": len(slow),
        "of_seconds": int(max(arrivals) - start) + 1,
        "busiest_share": round(max(slow.values()) / sum(slow.values()), 2),
    }


def _medians(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {name: round(percentile([r[name] for r in rows], 50), 2) for name in rows[0]}


def _means(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {name: round(sum(r[name] for r in rows) / len(rows), 2) for name in rows[0]}


def stage_text(stages: Mapping[str, float]) -> str:
    """ "wait 2.1, parse 0.3, ..." (ms)."""
    return ", ".join(f"{name} {value:.1f}" for name, value in stages.items())
