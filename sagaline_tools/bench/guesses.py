"""How many of the orchestrator's batches were decided without their read (its snapshot cache),
and how long its garbage collector stood still, read from the orchestrator's own /metrics once
a section's work is done.

A run's rate depends on this share (a guessed batch saves a database round trip), and the
share depends on how many sagas are in flight against the cache's size. The collector's pauses
showed what the cache's entries cost while they were kept as objects (docs/benchmark-log.md,
2026-12-07 late), and show any such cost again. So the e2e rungs report both.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

GUESSES = "sagaline_snapshot_guesses"
BATCHES = "sagaline_batch_size"
GC_PAUSES = "sagaline_gc_pause_seconds"


async def snapshot_guesses(port: int | None) -> dict[str, Any] | None:
    """Batches the intake applied, guesses that held and missed, and the collector's pauses;
    None when the process cannot be asked (no port, or no answer): the report says nothing."""
    if port is None:
        return None
    try:
        text = await asyncio.to_thread(_metrics_text, port)
    except OSError:
        return None
    return parse_guesses(text)


def parse_guesses(text: str) -> dict[str, Any]:
    held = missed = batches = 0.0
    gc_seconds: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{GUESSES}_total":
                if sample.labels.get("outcome") == "held":
                    held += sample.value
                elif sample.labels.get("outcome") == "missed":
                    missed += sample.value
            elif sample.name == f"{BATCHES}_count":
                batches += sample.value
            elif sample.name == f"{GC_PAUSES}_sum":
                gc_seconds[sample.labels.get("generation", "")] = sample.value
    return {
        "batches": int(batches),
        "held": int(held),
        "missed": int(missed),
        "share_held": held / batches if batches else None,
        "gc_pause_seconds": {generation: round(v, 3) for generation, v in gc_seconds.items()},
    }


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()
