"""A background loop's failed rounds in the logs (sagaline.background): one WARNING per run of
the same error, again when the error changes, one INFO when a round succeeds again."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sagaline.background import BackgroundLoop


class Flaky(BackgroundLoop):
    name = "flaky"
    min_backoff = 0.001
    max_backoff = 0.001

    def __init__(self, outcomes: list[Exception | None]) -> None:
        super().__init__(interval=0.001)
        self.outcomes = outcomes
        self.done = asyncio.Event()

    async def run_once(self) -> bool:
        if not self.outcomes:
            self.done.set()
            return False
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return True


@pytest.mark.timeout(10)
async def test_a_run_of_failures_is_one_warning_and_one_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sagaline.background")
    broken = [ConnectionError(), ConnectionError(), ConnectionError(), KeyError("x"), None]
    loop = Flaky([*broken, ConnectionError(), None])
    await loop.start()
    async with asyncio.timeout(5):
        await loop.done.wait()
    await loop.stop()
    seen = [
        (r.levelname, r.getMessage(), r.error if r.levelno == logging.WARNING else r.failed_rounds)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "sagaline.background"
    ]
    assert seen == [
        ("WARNING", "flaky round failed", "ConnectionError"),
        ("WARNING", "flaky round failed", "KeyError"),  # another error is news
        ("INFO", "flaky recovered", 4),
        ("WARNING", "flaky round failed", "ConnectionError"),  # a new run
        ("INFO", "flaky recovered", 1),
    ]
