"""Crash points for the fault-injection suite: kill the process at a named point.

`SAGALINE_CRASH_AT=point[:N]` makes the process exit abruptly (os._exit: no cleanup, no ack,
no flush) the N-th time it reaches `point` (N defaults to 1). Unset, a crash point costs one
dictionary lookup. It exists so tests can prove that a crash between any two steps loses
nothing and repeats no effect; never set it in production.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter

CRASH_ENV = "SAGALINE_CRASH_AT"
CRASH_EXIT_CODE = 86

POINTS = frozenset(
    {
        "orchestrator.before_commit",
        "orchestrator.after_commit_before_ack",
        "orchestrator.after_publish_before_mark",
        "orchestrator.timer_after_fire",
        "worker.after_commit_before_reply",
        "worker.before_ack",
    }
)

log = logging.getLogger("sagaline.faults")
_hits: Counter[str] = Counter()


def _configured() -> tuple[str, int] | None:
    raw = os.environ.get(CRASH_ENV, "").strip()
    if not raw:
        return None
    point, _, count = raw.partition(":")
    if point not in POINTS:
        raise ValueError(f"{CRASH_ENV}: unknown crash point {point!r}")
    return point, int(count or "1")


_TARGET = _configured()


def crash_point(point: str) -> None:
    if _TARGET is None or _TARGET[0] != point:
        return
    _hits[point] += 1
    if _hits[point] >= _TARGET[1]:
        log.critical("crash point reached; exiting", extra={"point": point, "hit": _hits[point]})
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
