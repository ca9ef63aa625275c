"""Checks a process makes before it starts consuming, with one clear line when they fail."""

from __future__ import annotations

import asyncio
import sys

from sagaline.migrate import schema_problem
from sagaline.settings import Settings

EXIT_NOT_READY = 3


def require_schema(settings: Settings, service: str) -> None:
    """Exit with one line if the database is not migrated: consuming would only park messages."""
    problem = asyncio.run(schema_problem(settings))
    if problem is not None:
        print(f"{service}: {problem}", file=sys.stderr)
        sys.exit(EXIT_NOT_READY)
