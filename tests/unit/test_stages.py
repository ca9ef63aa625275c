"""Bench-only stage timings: off by default (a mark is a no-op), one JSON line per timed batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from sagaline.messaging.batching import BatchConsumer
from sagaline.messaging.stages import StageLog, mark, note, timed
from tests.unit.test_batching import StandInQueue

pytestmark = pytest.mark.timeout(10)


class Marking:
    """A processor that passes two stages, as the orchestrator's intake does."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.was_timed: list[bool] = []

    async def process(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        self.was_timed.append(timed())
        mark("parsed")
        await asyncio.sleep(0.01)
        mark("committed")
        note("caused", [cast(object, d) == "b" for d in deliveries])  # stand-in strings
        self.done.set()


def test_marks_outside_a_timed_batch_do_nothing() -> None:
    assert not timed()
    mark("parsed")
    note("caused", [True])
    assert not timed()


async def test_a_timed_batch_is_one_line_with_every_arrival_and_stage(tmp_path: Path) -> None:
    path = tmp_path / "stages.jsonl"
    processor = Marking()
    batches = BatchConsumer(
        processor,
        batch_size=8,
        batch_wait=0.05,
        workers=1,
        stopping=asyncio.Event(),
        stages=StageLog(path),
    )
    queue = StandInQueue()
    await batches.start(cast(AbstractQueue, queue))
    await queue.put("a", "b")
    await processor.done.wait()
    await batches.stop(grace=1.0)
    (line,) = path.read_text().splitlines()
    batch = json.loads(line)
    assert processor.was_timed == [True]
    assert len(batch["received"]) == 2
    assert max(batch["received"]) <= batch["collected"] <= batch["parsed"]
    assert batch["committed"] - batch["parsed"] >= 0.009
    assert batch["caused"] == [False, True]
    assert not timed()  # the context is reset after the batch


async def test_an_untimed_consumer_marks_nothing() -> None:
    processor = Marking()
    batches = BatchConsumer(
        processor, batch_size=8, batch_wait=0.0, workers=1, stopping=asyncio.Event()
    )
    queue = StandInQueue()
    await batches.start(cast(AbstractQueue, queue))
    await queue.put("a")
    await processor.done.wait()
    await batches.stop(grace=1.0)
    assert processor.was_timed == [False]
