"""How a parked message is described for `sagaline dlq` (sagaline.dlq.describe, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from contracts.topology import H_ATTEMPT, H_ORIGINAL_QUEUE, H_REASON, H_REPLAY_COUNT
from sagaline.dlq import Selection, describe


def message(headers: dict[str, Any], **properties: Any) -> Any:
    return SimpleNamespace(
        headers=headers,
        message_id=properties.get("message_id", "m-1"),
        correlation_id=properties.get("correlation_id"),
        type=properties.get("type", "ProcessPayment"),
        body=b"{}",
    )


def test_our_headers_win() -> None:
    parked = describe(
        message({H_REASON: "malformed-json", H_ORIGINAL_QUEUE: "ns.orchestrator", H_ATTEMPT: 1}),
        0,
    )
    assert (parked.reason, parked.original_queue, parked.attempts, parked.replays) == (
        "malformed-json",
        "ns.orchestrator",
        1,
        0,
    )


def test_broker_dead_lettering_reads_the_most_recent_death() -> None:
    """RabbitMQ lists the newest death first. A message that came back from a retry queue (TTL
    expiry) and then hit the work queue's delivery limit was parked by the delivery limit."""
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    deaths = [
        {"queue": "ns.payments", "reason": "delivery_limit", "count": 1, "time": at},
        {"queue": "ns.payments.retry.1000ms", "reason": "expired", "count": 1, "time": at},
    ]
    parked = describe(message({"x-death": deaths}), 3)
    assert (parked.position, parked.reason, parked.original_queue) == (
        3,
        "delivery-limit",
        "ns.payments",
    )
    assert parked.first_failed_at == at.isoformat()


def test_replay_counter_and_garbage_headers() -> None:
    parked = describe(message({H_REPLAY_COUNT: 2, H_ATTEMPT: "three", "x-death": "junk"}), 0)
    assert (parked.replays, parked.attempts, parked.reason) == (2, 0, "unknown")


def test_selection_chooses_nothing_without_a_criterion() -> None:
    parked = describe(message({H_REASON: "unknown-type"}), 0)
    assert Selection().empty
    assert not Selection()(parked)
    assert Selection(reason="unknown-type")(parked)
    assert Selection(ids=frozenset({"m-1"}))(parked)
    assert Selection(everything=True)(parked)
