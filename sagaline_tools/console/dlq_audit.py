"""What the CLI's `dlq replay` and `dlq purge` leave in the database: an audit row per message
(with its saga, so the saga's page shows it) and the index rows of the copies that left."""

from __future__ import annotations

from sagaline.db import create_unpooled_engine
from sagaline.messaging.parking import ParkedMessage
from sagaline.settings import Settings
from sagaline_tools.console import audit
from sagaline_tools.console.index import forget
from sagaline_tools.console.keys import saga_id_of


async def record_messages(
    settings: Settings,
    operator: str,
    action: str,
    queue: str,
    note: str,
    messages: list[ParkedMessage],
) -> None:
    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        async with engine.begin() as conn:
            for m in messages:
                await audit.record(
                    conn, operator, action, f"{queue} {m.message_type or '?'} {m.message_id}",
                    note, saga_id=saga_id_of(m.correlation_id),
                    details={"queue": queue, "message_id": m.message_id, "reason": m.reason,
                             "replays": m.replays, "type": m.message_type},
                )  # fmt: skip
            await forget(conn, queue, [(m.message_id, m.replays) for m in messages if m.message_id])
    finally:
        await engine.dispose()
