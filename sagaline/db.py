"""Database engine construction and classification of database outages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from sagaline.settings import Settings
from sagaline.tls import db_connect_args

log = logging.getLogger("sagaline.db")

T = TypeVar("T")

_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
)


def is_database_outage(exc: BaseException) -> bool:
    """True when an error means the database is unreachable, not that the statement was wrong.

    Walks the cause chain because SQLAlchemy wraps driver errors, and the driver wraps OS errors.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OperationalError | InterfaceError) and not isinstance(
            current.orig, asyncpg.exceptions.PostgresError
        ):
            return True
        if isinstance(current, _OUTAGE_TYPES) or (
            isinstance(current, OSError) and current.errno is not None
        ):
            return True
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return False


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=db_connect_args(settings),
    )


def create_unpooled_engine(url: str) -> AsyncEngine:
    return create_async_engine(url, poolclass=NullPool)


async def hold_through_outage(
    attempt: Callable[[], Awaitable[T]],
    *,
    stopping: asyncio.Event,
    backoff: tuple[float, float],
    what: str,
    extra: dict[str, Any] | None = None,
) -> T:
    """Run `attempt` until it does not fail for a database outage, backing off in between.

    While the database is away a message (or a batch) is held, not sent through the retry
    ladder: that would only burn every message's attempts. Once `stopping` is set the outage
    error is raised, so the caller gives its deliveries back to the broker instead of holding
    them.
    """
    delay = backoff[0]
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_database_outage(exc) or stopping.is_set():
                raise
            log.warning(
                f"database unavailable; holding {what}", extra={**(extra or {}), "retry_in": delay}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff[1])
