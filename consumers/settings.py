"""Settings only workers read (SAGALINE_* environment variables, like sagaline.settings)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGALINE_", extra="ignore", frozen=True)

    fail_commands: Annotated[frozenset[str], NoDecode] = frozenset()
    """FAULT INJECTION, for tests only: command type names (comma-separated in
    SAGALINE_FAIL_COMMANDS, e.g. "ProcessPayment") whose handler raises a transient error on
    every attempt. Fault tests use it to drive a command through retry -> parking -> replay.
    Stored replies are still returned, so duplicates of already handled commands are unaffected.
    Leave empty in production; a worker logs a warning at start-up when it is set."""

    payments_default_limit_cents: int = Field(default=500_000, ge=0)
    """The most a customer without a row in payments.customer_limits may be charged per order."""

    @field_validator("fail_commands", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value
