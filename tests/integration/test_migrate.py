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
from sqlalchemy.engine import make_url

from sagaline.db import create_unpooled_engine
from sagaline.migrate import alembic_config, current_revision, upgrade
from sagaline.settings import Settings

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


async def test_tables_in_code_match_the_migrated_schema(settings: Settings) -> None:
    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: [
                    change
                    for metadata in _all_metadata()
                    for change in compare_metadata(
                        MigrationContext.configure(
                            sync,
                            opts={
                                "include_schemas": True,
                                "include_name": lambda name, type_, parent: (
                                    type_ != "schema" or name == metadata.schema
                                ),
                                "include_object": lambda obj, name, type_, reflected, compare_to: (
                                    type_ != "table"
                                    or (
                                        obj.schema == metadata.schema
                                        and name in metadata.tables
                                        or f"{obj.schema}.{name}" in metadata.tables
                                    )
                                ),
                            },
                        ),
                        metadata,
                    )
                ]
            )
    finally:
        await engine.dispose()
    assert diff == []
