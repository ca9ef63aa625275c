"""Fixtures the store's integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaline.db import create_engine
from sagaline.settings import Settings


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A pooled engine on the run's database (a test module may define its own instead)."""
    value = create_engine(settings, pool_size=5)
    try:
        yield value
    finally:
        await value.dispose()
