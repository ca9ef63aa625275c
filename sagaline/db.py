"""Database engine construction and classification of database outages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection

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


def create_engine(
    settings: Settings, *, pool_size: int | None = None, ping_after_idle: float = 0.0
) -> AsyncEngine:
    """`ping_after_idle`: see `ping_idle_connections`. Only callers that hold and retry
    their work through an outage (the consumers' batches) should ping less than always: any
    other caller would meet a dead connection after a database restart as an error."""
    engine = create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_recycle=1800,
        connect_args=db_connect_args(settings),
    )
    ping_idle_connections(engine, ping_after_idle)
    return engine


def ping_idle_connections(engine: AsyncEngine, after_seconds: float) -> None:
    """Ping a pooled connection before use only when it sat idle `after_seconds` or longer.

    SQLAlchemy's pool_pre_ping pings on every checkout, three round trips on asyncpg (BEGIN,
    an empty query, ROLLBACK), and the orchestrator's hot path checks out a connection for
    each batch and each dispatch (README "Benchmark" has the A/B). A connection in
    steady use needs no ping: if the database went away meanwhile, its next statement fails,
    SQLAlchemy invalidates the pool, and the batch is held and retried (hold_through_outage).
    A connection that sat idle (a quiet night, a firewall's idle timeout, a database restart
    while nothing ran) is pinged, and replaced if the ping fails, so the first batch after a
    quiet spell does not pay an outage's backoff."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _idle_since(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < after_seconds:
            return  # new (just connected) or in steady use
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool drops this connection and checks out (or opens) another.
            raise DisconnectionError("idle connection failed its ping") from exc


_IDLE_SINCE = "sagaline_idle_since"


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
