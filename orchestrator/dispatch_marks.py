"""Dispatched outbox rows waiting to be marked sent, marked by the next batch's write.

After a batch's commands are confirmed, their rows must be marked sent. A statement of its own
costs every batch a pool checkout, a round trip and a transaction, while the batch's worker
waits for it. Instead the confirmed ids wait here and the next batch's write marks them in the
transaction it commits anyway (SagaStore takes them). When no batch comes within `linger`
seconds, a flush marks them by a statement of its own.

A mark that never lands (a crash before the next write or the flush) leaves its row under its
dispatch lease: when the lease runs out, the relay loop publishes the row again, and the
consumers' inboxes absorb the duplicate, as for a mark lost to a crash before this existed.
Until then the relay loop never claims a pending row, not even in a sweep (`pending`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime

from sagaline.messaging.errors import error_summary

log = logging.getLogger("sagaline.relay")

Mark = tuple[uuid.UUID, datetime]
"""A confirmed row's message id and the time it was confirmed."""


class PendingMarks:
    """The confirmed rows of this process's dispatches until a write or a flush marks them."""

    def __init__(
        self,
        flush: Callable[[Sequence[Mark]], Awaitable[None]],
        *,
        linger: float = 0.05,
        retry: float = 1.0,
    ) -> None:
        self._flush = flush
        self.linger = linger
        """How long confirmed rows wait for a batch's write before a statement of their own."""
        self.retry = retry
        """After a flush failed (the database away), how long until the next one."""
        self._marks: dict[uuid.UUID, datetime] = {}
        self._writing: set[uuid.UUID] = set()
        """Taken by a write that has not committed yet: still not the relay loop's to claim."""
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def add(self, message_ids: Iterable[uuid.UUID], at: datetime) -> None:
        for message_id in message_ids:
            self._marks.setdefault(message_id, at)
        self._schedule(self.linger)

    def take(self) -> list[Mark]:
        """Every pending mark, for a write to apply: then `written`, or `give_back` if it did
        not commit."""
        marks, self._marks = list(self._marks.items()), {}
        self._writing.update(message_id for message_id, _ in marks)
        # Nothing is left to flush: the linger counts again from the next mark. Kept running, it
        # would fire every `linger` under steady load and send the marks of the moment in a
        # statement of their own, although the next write was milliseconds away.
        self._cancel_timer()
        return marks

    def written(self, marks: Sequence[Mark]) -> None:
        self._writing.difference_update(message_id for message_id, _ in marks)

    def give_back(self, marks: Sequence[Mark]) -> None:
        if not marks:
            return
        self.written(marks)
        for message_id, at in marks:
            self._marks.setdefault(message_id, at)
        self._schedule(self.linger)

    def pending(self) -> set[uuid.UUID]:
        """The rows confirmed and not yet marked (or being marked)."""
        return self._writing.union(self._marks)

    async def flush(self) -> None:
        """Mark every pending row now (on stop, and from the timer)."""
        marks = self.take()
        if not marks:
            return
        try:
            await self._flush(marks)
        except Exception as exc:  # the rows stay leased: the next write or flush marks them
            log.warning("outbox mark failed", extra={"error": error_summary(exc)})
            self.give_back(marks)
            self._schedule(self.retry, replace=True)
        else:
            self.written(marks)

    def _schedule(self, delay: float, *, replace: bool = False) -> None:
        if self._timer is not None and not replace:
            return
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self.flush())
        else:
            self._schedule(self.linger)

    async def close(self) -> None:
        self._cancel_timer()
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush()
        self._cancel_timer()  # a failed last flush: its marks are left to the leases
