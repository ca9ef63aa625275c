"""Migrations: one head, concurrent replicas, and tables in code matching the migrated schema."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection, make_url

from sagaline.db import create_unpooled_engine
from sagaline.migrate import alembic_config, current_revision, temporary_problem, upgrade
from sagaline.settings import Settings
from tests.conftest import own_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _all_metadata() -> list[MetaData]:
    import consumers.inventory.tables
    import consumers.payments.tables
    import consumers.shipping.tables
    import orchestrator.store.tables

    return [
        orchestrator.store.tables.metadata,
        consumers.payments.tables.metadata,
        consumers.inventory.tables.metadata,
        consumers.shipping.tables.metadata,
    ]


def test_one_head(settings: Settings) -> None:
    script = ScriptDirectory.from_config(alembic_config(settings))
    assert len(script.get_heads()) == 1


async def test_replicas_migrating_at_once_all_succeed_on_a_fresh_database(
    settings: Settings,
) -> None:
    name = f"sagaline_migrate_{uuid.uuid4().hex[:8]}"
    url = make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
    fresh = settings.model_copy(update={"database_url": url})
    try:
        await asyncio.gather(*(upgrade(fresh) for _ in range(3)))
        head = ScriptDirectory.from_config(alembic_config(fresh)).get_current_head()
        assert await current_revision(fresh) == head
    finally:
        admin = make_url(settings.database_url).set(drivername="postgresql", database="postgres")
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def _differences(sync_conn: Connection, metadata: MetaData) -> list[object]:
    """alembic's autogenerate diff of one schema's tables against the live database."""

    def include_name(name: str | None, type_: str, parent: object) -> bool:
        return type_ != "schema" or name == metadata.schema

    def include_object(obj: object, name: str | None, type_: str, *_: object) -> bool:
        if type_ != "table":
            return True
        return f"{metadata.schema}.{name}" in metadata.tables

    context = MigrationContext.configure(
        sync_conn,
        opts={
            "include_schemas": True,
            "include_name": include_name,
            "include_object": include_object,
        },
    )
    return list(compare_metadata(context, metadata))


async def test_tables_in_code_match_the_migrated_schema(settings: Settings) -> None:
    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            for metadata in _all_metadata():
                diff = await conn.run_sync(_differences, metadata)
                assert diff == [], metadata.schema
    finally:
        await engine.dispose()


async def test_the_runtime_role_gets_temporary_and_a_role_without_it_is_named(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The orchestrator's write function lives in its session's temporary schema: migrating
    grants TEMPORARY to the runtime role, and the startup check names a role without it."""
    suffix = uuid.uuid4().hex[:8]
    group, app = f"sl_runtime_{suffix}", f"sl_app_{suffix}"
    admin_url = make_url(settings.database_url).set(drivername="postgresql", database="postgres")
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    try:
        await admin.execute(f"CREATE ROLE {group} NOLOGIN")
        await admin.execute(f"CREATE ROLE {app} LOGIN IN ROLE {group}")
        monkeypatch.setenv("SAGALINE_DB_RUNTIME_ROLE", group)  # the migrations read it
        async with own_database(settings) as own:
            url = make_url(own.database_url)
            database = url.database
            owner = await asyncpg.connect(
                url.set(drivername="postgresql").render_as_string(hide_password=False)
            )
            try:  # as deploy/postgres/roles.sql leaves it: nothing for PUBLIC
                await owner.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
                await owner.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {group}')
                as_app = own.model_copy(
                    update={"database_url": url.set(username=app).render_as_string(False)}
                )
                assert await temporary_problem(as_app) is None

                await owner.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM {group}')
                problem = await temporary_problem(as_app)
            finally:
                await owner.close()
        assert problem is not None
        assert f"role {app} may not create temporary objects in database {database}" in problem
        assert f"GRANT TEMPORARY ON DATABASE {database} TO {app}" in problem
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {app}")
        await admin.execute(f"DROP ROLE IF EXISTS {group}")
        await admin.close()
