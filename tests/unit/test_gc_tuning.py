"""The startup heap leaves the collector's walk; later garbage is still collected; pauses are
measured per generation."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from sagaline.gc_tuning import GcPauses, YoungThreshold, freeze_startup_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def pause_count(registry: CollectorRegistry, generation: str) -> float:
    value = registry.get_sample_value("sagaline_gc_pause_seconds_count", {"generation": generation})
    return value or 0.0


@pytest.mark.usefixtures("unfrozen")
def test_what_startup_built_is_frozen_and_later_cycles_are_still_collected() -> None:
    startup_heap = [Node() for _ in range(20_000)]  # tracked containers, as startup builds

    frozen = freeze_startup_heap()

    assert frozen >= len(startup_heap)
    assert gc.get_freeze_count() == frozen
    first, second = Node(), Node()
    first.other, second.other = second, first  # a cycle: only the collector can free it
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None


@pytest.mark.usefixtures("unfrozen")
def test_pauses_are_observed_per_generation_while_installed() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    pauses.install()
    pauses.install()  # idempotent: one observation per collection
    try:
        gc.collect()
        assert pause_count(registry, "2") == 1
        count = pauses.freeze()
        assert registry.get_sample_value("sagaline_gc_frozen_objects") == count > 0
    finally:
        pauses.uninstall()
    observed = pause_count(registry, "2")
    gc.collect()
    assert pause_count(registry, "2") == observed


def test_the_young_threshold_holds_while_the_service_runs_and_is_undone_on_stop() -> None:
    before = gc.get_threshold()
    registry = CollectorRegistry()
    threshold = YoungThreshold(before[0] * 10, registry)

    threshold.apply()
    threshold.apply()  # a second start must not take the raised value as the one to restore
    try:
        assert gc.get_threshold() == (before[0] * 10, before[1], before[2])
        assert registry.get_sample_value("sagaline_gc_young_threshold") == before[0] * 10
    finally:
        threshold.restore()

    assert gc.get_threshold() == before
    threshold.restore()
    assert gc.get_threshold() == before
