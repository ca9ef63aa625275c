"""`sagaline migrate`: create the database if needed and upgrade it to the single alembic head.

Safe when several replicas start at once: a session-level advisory lock serialises them, and a
replica that waited finds the schema already at head.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from sagaline.settings import Settings
from sagaline.tls import db_connect_args

log = logging.getLogger("sagaline.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_KEY = 0x5A6A11E  # "sagaline" migrations; any fixed 64-bit key shared by all replicas


def alembic_config(settings: Settings) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a '%' in a password.
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    config.attributes["connect_args"] = db_connect_args(settings)  # TLS (sagaline/tls.py)
    return config


def _dsn(settings: Settings, database: str | None = None) -> str:
    url = make_url(settings.sqlalchemy_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


async def ensure_database(settings: Settings) -> None:
    """Create the configured database when it does not exist (first start on a fresh server)."""
    name = make_url(settings.sqlalchemy_url).database
    if not name:
        return
    try:
        conn = await asyncpg.connect(_dsn(settings), **db_connect_args(settings))
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(_dsn(settings, "postgres"), **db_connect_args(settings))
        try:
            quoted = '"' + name.replace('"', '""') + '"'
            await admin.execute(f"CREATE DATABASE {quoted}")
            log.info("created database", extra={"database": name})
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            pass  # another replica created it first (the catalog race shows as either error)
        finally:
            await admin.close()
    else:
        await conn.close()


async def upgrade(settings: Settings, revision: str = "head") -> None:
    await ensure_database(settings)
    lock_conn = await asyncpg.connect(_dsn(settings), **db_connect_args(settings))
    try:
        await lock_conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        # alembic's env.py calls asyncio.run(); run it off this loop's thread.
        await asyncio.to_thread(command.upgrade, alembic_config(settings), revision)
    finally:
        try:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        finally:
            await lock_conn.close()


async def current_revision(settings: Settings) -> str | None:
    conn = await asyncpg.connect(_dsn(settings), **db_connect_args(settings))
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        if not exists:
            return None
        value = await conn.fetchval("SELECT version_num FROM public.alembic_version")
        return str(value) if value is not None else None
    finally:
        await conn.close()


def head_revision(settings: Settings) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


async def schema_problem(settings: Settings) -> str | None:
    """None when the database is at the latest revision; otherwise what an operator must do."""
    try:
        current = await current_revision(settings)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"database unreachable or missing ({type(exc).__name__}); run `sagaline migrate`"
    head = head_revision(settings)
    if current != head:
        return (
            f"database schema is at {current or 'nothing'}, expected {head}: run `sagaline migrate`"
        )
    return None


async def may_create_temporary(settings: Settings) -> tuple[bool, str, str]:
    """(allowed, role, database): whether this process's role may create temporary objects
    (the saga store's read and write functions live in its session's temporary schema). Raises
    OSError or asyncpg.PostgresError when the database does not answer."""
    conn = await asyncpg.connect(_dsn(settings), **db_connect_args(settings))
    try:
        allowed, user, database = await conn.fetchrow(
            "SELECT has_database_privilege(current_user, current_database(), 'TEMPORARY'),"
            " current_user, current_database()"
        )
    finally:
        await conn.close()
    return bool(allowed), str(user), str(database)


def temporary_refused(user: str, database: str, granted_to: str) -> str:
    """What an operator must do when `user` may not create temporary objects; migrating
    grants TEMPORARY to `granted_to`."""
    return (
        f"role {user} may not create temporary objects in database {database}: run"
        f" `sagaline migrate` (it grants TEMPORARY to {granted_to}, of which"
        f" {user} must be a member) or GRANT TEMPORARY ON DATABASE {database} TO {user}"
    )


async def temporary_problem(settings: Settings) -> str | None:
    """None when the runtime role may create temporary objects; otherwise what to do."""
    try:
        allowed, user, database = await may_create_temporary(settings)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"database unreachable ({type(exc).__name__})"
    return None if allowed else temporary_refused(user, database, settings.db_runtime_role)
