"""Database engine construction and classification of database outages."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from sagaline.settings import Settings
from sagaline.tls import db_connect_args

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
