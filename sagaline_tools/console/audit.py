"""The audit trail of actions on parked messages, jobs, approvals and accounts.

Saga actions write their entry to the saga's own history (orchestrator.admin, timer_admin);
everything else an operator does, from the CLI or the console, lands here with the same actor
(`operator:<name>`) and reason. An entry about one saga's message carries its saga id, so the
saga's page shows it in its timeline.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from sagaline_tools.console.tables import audit


async def record(
    conn: AsyncConnection,
    operator: str,
    action: str,
    target: str,
    reason: str,
    *,
    saga_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    await conn.execute(
        audit.insert().values(
            at=at or datetime.now(UTC),
            actor=f"operator:{operator}",
            action=action,
            target=target[:1000],
            saga_id=saga_id,
            reason=reason,
            details=details or {},
        )
    )
