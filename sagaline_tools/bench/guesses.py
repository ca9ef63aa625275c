"""How many of the orchestrator's batches were decided without their read (its snapshot cache),
read from the orchestrator's own /metrics once a section's work is done.

A run's rate depends on this share (a guessed batch saves a database round trip), and the share
depends on how many sagas are in flight against the cache's size, so the sections that run the
real orchestrator report it beside their rates.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

GUESSES = "sagaline_snapshot_guesses"
BATCHES = "sagaline_batch_size"


async def snapshot_guesses(port: int | None) -> dict[str, Any] | None:
    """Batches the intake applied, and guesses that held and missed; None when the process
    cannot be asked (no port, or no answer): the report then says nothing of it."""
    if port is None:
        return None
    try:
        text = await asyncio.to_thread(_metrics_text, port)
    except OSError:
        return None
    return parse_guesses(text)


def parse_guesses(text: str) -> dict[str, Any]:
    held = missed = batches = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{GUESSES}_total":
                if sample.labels.get("outcome") == "held":
                    held += sample.value
                elif sample.labels.get("outcome") == "missed":
                    missed += sample.value
            elif sample.name == f"{BATCHES}_count":
                batches += sample.value
    return {
        "batches": int(batches),
        "held": int(held),
        "missed": int(missed),
        "share_held": held / batches if batches else None,
    }


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()
