"""The write call's rollbacks that mean "decide again" become ConcurrencyConflict (the store
splits the batch and retries); anything else stays an error of its own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest

from orchestrator.store import sql
from orchestrator.store.plan import Plan
from orchestrator.store.sql import ConcurrencyConflict


class Refusing:
    """An asyncpg connection whose every statement fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def execute(self, *_: Any) -> str:
        raise self.error


def one_step() -> Plan:
    plan = Plan(now=datetime(2026, 12, 6, tzinfo=UTC))
    plan.inbox.append((uuid.uuid4(), uuid.uuid4(), "PaymentProcessed"))
    return plan


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.SerializationError("2 of 3 rows changed under a concurrent step"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
    ],
    ids=["shortfall", "deadlock"],
)
async def test_a_rollback_to_retry_is_a_concurrency_conflict(error: Exception) -> None:
    connection = cast(asyncpg.Connection, Refusing(error))
    with pytest.raises(ConcurrencyConflict):
        await sql.write(connection, one_step())


async def test_other_database_errors_are_not_retried_as_conflicts() -> None:
    connection = cast(asyncpg.Connection, Refusing(asyncpg.UndefinedTableError("no table")))
    with pytest.raises(asyncpg.UndefinedTableError):
        await sql.write(connection, one_step())
