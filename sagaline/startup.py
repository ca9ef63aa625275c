"""Checks a process makes before it starts consuming, with one clear line when they fail."""

from __future__ import annotations

import asyncio
import sys

from sagaline.migrate import schema_problem, temporary_problem
from sagaline.settings import Settings

EXIT_NOT_READY = 3


def require_schema(settings: Settings, service: str, *, temporary: bool = False) -> None:
    """Exit with one line if the database is not migrated (consuming would only park
    messages), or, with `temporary`, if the role may not create temporary objects (every
    batch would fail)."""
    problem = asyncio.run(_problem(settings, temporary))
    if problem is not None:
        print(f"{service}: {problem}", file=sys.stderr)
        sys.exit(EXIT_NOT_READY)


async def _problem(settings: Settings, temporary: bool) -> str | None:
    problem = await schema_problem(settings)
    if problem is None and temporary:
        problem = await temporary_problem(settings)
    return problem
