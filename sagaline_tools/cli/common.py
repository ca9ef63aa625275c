"""Helpers several commands share: settings, the event loop, and which workers exist."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from pydantic import ValidationError

from sagaline.settings import Settings
from sagaline_tools.cli.output import CliError

T = TypeVar("T")

# Used until the consumers package publishes its registry (consumers.WORKERS).
DEFAULT_WORKERS: tuple[str, ...] = ("payments", "inventory", "shipping")

# Settings fields whose environment variable has no SAGALINE_ prefix.
_UNPREFIXED = {"amqp_url": "AMQP_URL", "database_url": "DATABASE_URL"}


def env_name(field: str) -> str:
    """The environment variable of a settings field (an error may already name the alias)."""
    if field.isupper():
        return field
    return _UNPREFIXED.get(field, f"SAGALINE_{field.upper()}")


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; an invalid variable becomes one readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        # include_input=False: a bad value may be a secret (a URL with a password).
        problems = [
            f"{env_name(str(err['loc'][0])) if err['loc'] else 'settings'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise CliError("invalid configuration: " + "; ".join(problems), exit_code=2) from None


def worker_names() -> tuple[str, ...]:
    """Names of the consumer workers, from consumers.WORKERS when that registry exists."""
    try:
        from consumers import WORKERS
    except ImportError:  # the consumers package is optional in a slimmed-down image
        return DEFAULT_WORKERS
    names = tuple(str(name) for name in WORKERS)
    return names or DEFAULT_WORKERS


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Ctrl-C becomes exit code 130 without a traceback."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise CliError("interrupted", exit_code=130) from None
