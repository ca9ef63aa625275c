"""The workers' tables.py and migration 0002 describe the same tables."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from consumers import WORKERS
from consumers.runtime import WorkerSpec
from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _diff(connection: Connection, spec: WorkerSpec) -> list[Any]:
    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return name == spec.schema if type_ == "schema" else True

    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": include_name,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, spec.metadata))


def _check_constraints(connection: Connection, spec: WorkerSpec) -> dict[str, set[str]]:
    inspector = inspect(connection)
    return {
        table: {str(c["name"]) for c in inspector.get_check_constraints(table, schema=spec.schema)}
        for table in inspector.get_table_names(schema=spec.schema)
    }


@pytest.mark.parametrize("name", sorted(WORKERS))
async def test_tables_match_migration(settings: Settings, name: str) -> None:
    spec = WORKERS[name]
    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff, spec)
            checks = await conn.run_sync(_check_constraints, spec)
    finally:
        await engine.dispose()
    assert diff == []
    # compare_metadata does not look at CHECK constraints; their names must match too.
    expected = {
        table.name: {
            str(c.name) for c in table.constraints if c.__class__.__name__ == "CheckConstraint"
        }
        for table in spec.metadata.tables.values()
    }
    assert checks == expected
