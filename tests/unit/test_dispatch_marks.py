"""Confirmed dispatches wait for the next batch's write to mark them sent; without one, a flush
marks them, and a mark that could not be written is kept for the next write or flush."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from orchestrator.dispatch_marks import Mark, PendingMarks

pytestmark = pytest.mark.timeout(10)

AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 7, 9, 1, tzinfo=UTC)


class Database:
    """The flush's statement: records what it marked, or fails while `down`."""

    def __init__(self) -> None:
        self.marked: list[Mark] = []
        self.down = False
        self.calls = 0
        self.wrote = asyncio.Event()

    async def mark(self, marks: Sequence[Mark]) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("the database is away")
        self.marked += marks
        self.wrote.set()


async def test_a_write_takes_every_pending_mark_with_its_confirm_time_and_no_flush_runs() -> None:
    database = Database()
    marks = PendingMarks(database.mark, linger=3600)
    first, second = uuid.uuid4(), uuid.uuid4()
    marks.add([first], AT)
    marks.add([second, first], LATER)  # confirmed again: the first time stays
    assert marks.pending() == {first, second}
    taken = marks.take()
    assert sorted(taken) == sorted([(first, AT), (second, LATER)])
    assert marks.take() == []
    # Until the write committed, the relay loop must not claim them (not even in a sweep).
    assert marks.pending() == {first, second}
    marks.written(taken)
    assert marks.pending() == set()
    await marks.close()
    assert database.calls == 0  # nothing was left for a statement of its own


async def test_marks_no_write_takes_are_flushed_after_the_linger() -> None:
    database = Database()
    marks = PendingMarks(database.mark, linger=0)
    message_id = uuid.uuid4()
    marks.add([message_id], AT)
    async with asyncio.timeout(5):
        await database.wrote.wait()
    assert database.marked == [(message_id, AT)]
    assert marks.pending() == set()


async def test_marks_a_failed_write_gives_back_are_pending_again_and_flushed() -> None:
    database = Database()
    marks = PendingMarks(database.mark, linger=0)
    message_id = uuid.uuid4()
    marks.add([message_id], AT)
    taken = marks.take()  # a batch's write took them, then did not commit
    marks.give_back(taken)
    assert marks.pending() == {message_id}
    async with asyncio.timeout(5):
        await database.wrote.wait()
    assert database.marked == [(message_id, AT)]


async def test_a_flush_that_fails_keeps_its_marks_and_tries_again() -> None:
    database = Database()
    database.down = True
    marks = PendingMarks(database.mark, linger=0, retry=0)
    message_id = uuid.uuid4()
    marks.add([message_id], AT)
    async with asyncio.timeout(5):
        while database.calls < 2:  # failed at least once, and was tried again
            await asyncio.sleep(0)
        assert not database.marked
        database.down = False
        await database.wrote.wait()
    assert database.marked == [(message_id, AT)]


async def test_closing_flushes_what_is_pending_at_once() -> None:
    database = Database()
    marks = PendingMarks(database.mark, linger=3600)
    message_id = uuid.uuid4()
    marks.add([message_id], AT)
    await marks.close()
    assert database.marked == [(message_id, AT)]


async def test_closing_while_the_database_is_away_leaves_the_rows_to_their_leases() -> None:
    database = Database()
    database.down = True
    marks = PendingMarks(database.mark, linger=3600)
    marks.add([uuid.uuid4()], AT)
    await marks.close()  # logged, not raised: the relay loop re-publishes after the lease
    assert database.calls == 1
    assert not database.marked
