"""Where a batch's time goes: monotonic timestamps of its stages, for the benchmark only.

Off unless SAGALINE_STAGE_LOG names a file. Then the batch consumer notes when each delivery
arrived and when its batch was collected, the code along the batch's path marks the stages it
passes (`mark("committed")`, ...) and each batch is written as one JSON line when it is done.
The batch in hand is found through a context variable (each batch runs in its own task), so
nothing is passed along the hot path, and when it is off a mark costs one context variable read.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

_current: contextvars.ContextVar[BatchStages | None] = contextvars.ContextVar(
    "sagaline_batch_stages", default=None
)


class BatchStages:
    """One batch: the arrival time of each delivery, then one time per stage."""

    __slots__ = ("notes", "received", "times")

    def __init__(self, received: list[float], collected: float) -> None:
        self.received = received
        self.times: dict[str, float] = {"collected": collected}
        self.notes: dict[str, Any] = {}

    def to_json(self) -> str:
        return json.dumps({"received": self.received, **self.times, **self.notes})


def mark(stage: str) -> None:
    """The batch in hand (if timed) reached `stage` now."""
    stages = _current.get()
    if stages is not None:
        stages.times[stage] = time.monotonic()


def note(name: str, value: Any) -> None:
    """Something about the batch in hand (if timed), e.g. which deliveries caused a command."""
    stages = _current.get()
    if stages is not None:
        stages.notes[name] = value


def timed() -> bool:
    return _current.get() is not None


class StageLog:
    """The file the timed batches are appended to, one JSON line each."""

    def __init__(self, path: str | Path) -> None:
        self._file: IO[str] = Path(path).open("a", buffering=1)  # noqa: SIM115 (closed by close)
        self._arrived: dict[int, float] = {}

    def arrived(self, delivery: object) -> None:
        self._arrived[id(delivery)] = time.monotonic()

    def begin(self, batch: Sequence[object]) -> contextvars.Token[BatchStages | None]:
        now = time.monotonic()
        received = [self._arrived.pop(id(d), now) for d in batch]
        return _current.set(BatchStages(received, now))

    def end(self, token: contextvars.Token[BatchStages | None]) -> None:
        stages = _current.get()
        _current.reset(token)
        if stages is not None:
            stages.times["ended"] = time.monotonic()  # the batch's worker is free again
            self._file.write(stages.to_json() + "\n")

    def close(self) -> None:
        self._file.close()
