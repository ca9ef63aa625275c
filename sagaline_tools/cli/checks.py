"""Pre-flight checks: is the broker reachable, is the database reachable?

Each turns the many ways a connection fails (refused, unknown host, bad login, timeout) into
one sentence naming the service and its redacted URL, so a command can stop with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options
from sagaline_tools.cli.output import CliError, one_line, safe_url

EXIT_UNAVAILABLE = 3
"""Exit code of a command that stopped because RabbitMQ or PostgreSQL could not be reached."""

_NOISY_LOGGERS = ("aiormq", "aio_pika")


@contextlib.contextmanager
def _quiet_amqp_logs() -> Iterator[None]:
    # aiormq logs each failed connect attempt at WARNING; the CLI reports it once, itself.
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _amqp_reason(exc: BaseException) -> str:
    # AMQPConnectionError carries (errno, text) as args; str() of it is a tuple repr.
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return args[1]
    if type(exc).__name__ == "ProbableAuthenticationError":
        return "login refused (check the user and password in AMQP_URL)"
    return one_line(exc)


async def check_broker(settings: Settings, within: float = 5.0) -> None:
    import aio_pika

    where = safe_url(settings.amqp_url)
    with _quiet_amqp_logs():
        try:
            async with asyncio.timeout(within):
                connection = await aio_pika.connect(
                    settings.amqp_url, timeout=within, **amqp_connect_options(settings)
                )
            await connection.close()
        except TimeoutError:
            raise CliError(
                f"cannot reach RabbitMQ at {where}: no answer within {within:g}s", EXIT_UNAVAILABLE
            ) from None
        except Exception as exc:
            raise CliError(
                f"cannot reach RabbitMQ at {where}: {_amqp_reason(exc)}", EXIT_UNAVAILABLE
            ) from None


_MISSING_DATABASE = "3D000"  # invalid_catalog_name


async def check_database(settings: Settings, within: float = 5.0) -> bool:
    """True when the database answers; False when the server answers but the database is missing.

    A missing database is not an error here: `sagaline migrate` creates it.
    """
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    where = safe_url(settings.database_url)
    try:
        engine = create_async_engine(
            settings.sqlalchemy_url, poolclass=NullPool, connect_args={"timeout": within}
        )
    except Exception as exc:  # an unparseable URL or an unknown driver name
        raise CliError(f"invalid DATABASE_URL {where}: {one_line(exc)}", exit_code=2) from None
    try:
        async with asyncio.timeout(within + 1), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except TimeoutError:
        raise CliError(
            f"cannot reach PostgreSQL at {where}: no answer within {within:g}s", EXIT_UNAVAILABLE
        ) from None
    except Exception as exc:
        orig = getattr(exc, "orig", None)
        if getattr(orig, "sqlstate", None) == _MISSING_DATABASE:
            return False
        if orig is not None:
            # The server answered and refused (unknown role, bad password, no pg_hba entry).
            raise CliError(
                f"PostgreSQL at {where} refused the connection: {one_line(orig)}",
                EXIT_UNAVAILABLE,
            ) from None
        raise CliError(
            f"cannot reach PostgreSQL at {where}: {one_line(exc)}", EXIT_UNAVAILABLE
        ) from None
    finally:
        await engine.dispose()
