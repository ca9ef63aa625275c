"""How a parked message is described for `sagaline dlq` (sagaline.messaging.parking.describe,
no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from contracts.topology import H_ATTEMPT, H_ORIGINAL_QUEUE, H_REASON, H_REPLAY_COUNT, ParkReason
from sagaline.messaging.parking import ENVELOPE_PARSE_LIMIT, Selection, describe


def message(headers: dict[str, Any], body: bytes = b"{}", **properties: Any) -> Any:
    return SimpleNamespace(
        headers=headers,
        message_id=properties.get("message_id", "m-1"),
        correlation_id=properties.get("correlation_id"),
        type=properties.get("type", "ProcessPayment"),
        body=body,
    )


def bare(body: bytes, headers: dict[str, Any] | None = None) -> Any:
    """A message whose publisher set no AMQP properties: the ids live only in the envelope."""
    return message(headers or {}, body, message_id=None, correlation_id=None, type=None)


ENVELOPE = {"message_id": "m-env", "correlation_id": "c-env", "type": "OrderSubmitted"}


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


def test_ids_and_type_fall_back_to_the_envelope() -> None:
    parked = describe(bare(json.dumps(ENVELOPE | {"payload": {}}).encode()), 0)
    assert (parked.message_id, parked.correlation_id, parked.message_type) == (
        "m-env",
        "c-env",
        "OrderSubmitted",
    )


def test_properties_win_over_the_envelope() -> None:
    body = json.dumps(ENVELOPE).encode()
    parked = describe(message({}, body, message_id="m-prop", correlation_id=None), 0)
    assert (parked.message_id, parked.correlation_id, parked.message_type) == (
        "m-prop",
        "c-env",
        "ProcessPayment",
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe\x00",  # not UTF-8
        b"[1, 2, 3]",
        b'"m-env"',
        b"null",
        b"[" * 30_000 + b"]" * 30_000,  # deeper than the parser's recursion limit, under the bound
        json.dumps({"message_id": 7, "correlation_id": ["c"], "type": {"a": 1}}).encode(),
        json.dumps({"message_id": ""}).encode(),
    ],
    ids=["malformed", "binary", "array", "string", "null", "deep", "non-strings", "empty"],
)
def test_unreadable_envelopes_show_no_ids(body: bytes) -> None:
    parked = describe(bare(body), 0)
    assert (parked.message_id, parked.correlation_id, parked.message_type) == (None, None, None)
    assert parked.size == len(body)


def test_bodies_over_the_bound_are_not_parsed() -> None:
    body = json.dumps(ENVELOPE | {"pad": "x" * ENVELOPE_PARSE_LIMIT}).encode()
    assert describe(bare(body), 0).message_id is None


def test_envelope_values_are_cut_to_a_printable_length() -> None:
    body = json.dumps(ENVELOPE | {"type": "T" * 5_000}).encode()
    message_type = describe(bare(body), 0).message_type
    assert message_type is not None and 0 < len(message_type) <= 200


def test_the_broker_reason_beats_a_forged_header() -> None:
    """A message the broker dead-lettered carries x-death (our own parked copies drop it): its
    x-sagaline-* headers came from the original publisher, who may have invented them."""
    deaths = [{"queue": "ns.payments", "reason": "rejected", "count": 1}]
    forged = {H_REASON: "retries-exhausted", H_ORIGINAL_QUEUE: "ns.elsewhere", "x-death": deaths}
    parked = describe(message(forged), 0)
    assert (parked.reason, parked.original_queue) == (ParkReason.REJECTED.value, "ns.payments")
