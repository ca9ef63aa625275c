"""The console's own settings (SAGALINE_CONSOLE_*), beside the shared ones (sagaline.settings)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGALINE_CONSOLE_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    read_only: bool = False
    """No actions at all: the console may then log in with read-only credentials."""
    approvals: Literal["admin", "second-operator"] = "admin"
    """Who lets an operator purge, abort or replay in bulk: an admin does it instead (admin),
    or a second operator approves the operator's request (second-operator)."""
    bulk_limit: int = Field(default=100, ge=1)
    """Replays of more messages than this at once are bulk (guarded like purge)."""
    stuck_after_minutes: float = Field(default=15.0, gt=0)
    session_hours: float = Field(default=8.0, gt=0)
    insecure_cookies: bool = False
    """Send the session cookie over plain HTTP too (a local trial without TLS; never in
    production: browsers treat localhost as secure and need no such setting)."""
    reconcile_seconds: float = Field(default=60.0, gt=0)

    @property
    def stuck_after(self) -> timedelta:
        return timedelta(minutes=self.stuck_after_minutes)

    @property
    def four_eyes(self) -> bool:
        return self.approvals == "second-operator"
