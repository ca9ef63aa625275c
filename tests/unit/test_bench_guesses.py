"""The bench reads the orchestrator's snapshot-cache guesses from its /metrics text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sagaline_tools.bench.guesses import parse_guesses


def test_guesses_and_batches_are_read_from_the_exposition() -> None:
    registry = CollectorRegistry()
    guesses = Counter("sagaline_snapshot_guesses", "", ["outcome"], registry=registry)
    guesses.labels("held").inc(3)
    guesses.labels("missed").inc(1)
    batches = Histogram("sagaline_batch_size", "", ["consumer"], registry=registry)
    for size in (1, 4, 8, 8):
        batches.labels("orchestrator").observe(size)
    pauses = Histogram("sagaline_gc_pause_seconds", "", ["generation"], registry=registry)
    pauses.labels("2").observe(0.25)
    pauses.labels("2").observe(0.5)

    assert parse_guesses(generate_latest(registry).decode()) == {
        "batches": 4,
        "held": 3,
        "missed": 1,
        "share_held": 0.75,
        "gc_pause_seconds": {"2": 0.75},
    }


def test_a_process_without_the_cache_reports_no_share() -> None:
    assert parse_guesses("")["share_held"] is None
