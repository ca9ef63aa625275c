"""The pool pings a connection only after it sat idle: a connection whose server side died
while it was idle is replaced before use; one in steady use is handed out without a ping."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from sagaline.db import create_engine, is_database_outage
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def _kill_the_pooled_connection(settings: Settings, idle_ping: float) -> None:
    """Use the pool's one connection, terminate its backend from outside, use the pool again."""
    engine = create_engine(settings, pool_size=1, ping_after_idle=idle_ping)
    killer = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        async with killer.connect() as conn:
            assert await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        await engine.dispose()
        await killer.dispose()


async def test_an_idle_connection_whose_backend_died_is_replaced_before_use(
    settings: Settings,
) -> None:
    await _kill_the_pooled_connection(settings, idle_ping=0)  # any idle time counts


async def test_a_connection_in_steady_use_is_not_pinged(settings: Settings) -> None:
    # Without the ping the dead connection reaches the caller, as an outage (the intake holds
    # the batch and retries it on a new connection); the pool then replaces it.
    with pytest.raises(DBAPIError) as caught:
        await _kill_the_pooled_connection(settings, idle_ping=3600)
    assert is_database_outage(caught.value)
