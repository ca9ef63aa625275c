"""The console's tables in code (sagaline_tools/console/tables.py) match migration 0006."""

from __future__ import annotations

import pytest

from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from sagaline_tools.console.tables import metadata
from tests.integration.test_migrate import _differences

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_console_tables_match_the_migrated_schema(settings: Settings) -> None:
    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences, metadata) == []
    finally:
        await engine.dispose()
