"""Per-message latency and where it went, from stage timings (pure: no I/O).

The orchestrator writes one line per batch (sagaline.messaging.stages): when each delivery
arrived, and when the batch was collected, parsed, committed, acknowledged, its commands'
outbox rows claimed, and their publishes confirmed. A delivery whose step sent a command
("caused") has the latency arrival -> confirm, split into the stages below; they add up to it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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

StageTimes = dict[str, float]
"""One message: milliseconds per stage."""


def orchestrator_stages(lines: Iterable[str]) -> tuple[list[StageTimes], int]:
    """Per command-causing delivery, its stages; and how many batches had no complete timing
    (a batch that fell back to one-by-one handling, or whose commands were left to the relay)."""
    messages: list[StageTimes] = []
    incomplete = 0
    for line in lines:
        if not line.strip():
            continue
        batch: dict[str, Any] = json.loads(line)
        caused: list[bool] = batch.get("caused") or []
        if not any(caused):
            continue
        if any(mark not in batch for _, mark in ORCHESTRATOR_STAGES):
            incomplete += 1
            continue
        shared = {
            stage: (batch[end] - batch[start]) * 1000
            for (_, start), (stage, end) in itertools.pairwise(ORCHESTRATOR_STAGES)
        }
        for arrived, sends in zip(batch["received"], caused, strict=True):
            if sends:
                messages.append({"wait": (batch["collected"] - arrived) * 1000, **shared})
    return messages, incomplete


def summarize(messages: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Percentiles of the total (the sum of a message's stages); each stage's median; and the
    mean of each stage over the slowest 1% (what the tail is made of)."""
    if not messages:
        raise ValueError("no timed messages")
    totals = [sum(m.values()) for m in messages]
    summary: dict[str, Any] = dict(latency_summary(totals))
    names = list(messages[0])
    summary["stages_p50_ms"] = {
        name: round(percentile([m[name] for m in messages], 50), 2) for name in names
    }
    tail = [m for m, total in zip(messages, totals, strict=True) if total >= summary["p99_ms"]]
    summary["stages_tail_ms"] = {
        name: round(sum(m[name] for m in tail) / len(tail), 2) for name in names
    }
    return summary


def stage_text(stages: Mapping[str, float]) -> str:
    """ "wait 2.1, parse 0.3, ..." (ms)."""
    return ", ".join(f"{name} {value:.1f}" for name, value in stages.items())
