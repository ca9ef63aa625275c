"""Exchange and queue names, and the arguments each queue is declared with.

One source of names for every process. A namespace prefixes everything so that several
deployments (or test runs) share one broker without colliding. Retry queue names carry their
delay: changing the delays declares new queues instead of failing with PRECONDITION_FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ORCHESTRATOR = "orchestrator"

# Headers sagaline sets on retried and parked copies. Attempts are counted in our own header:
# RabbitMQ 3.13+ no longer interprets x-death on messages a client re-publishes.
H_ATTEMPT = "x-sagaline-attempt"
H_REASON = "x-sagaline-reason"
H_ERROR = "x-sagaline-error"
H_ORIGINAL_QUEUE = "x-sagaline-original-queue"
H_FIRST_FAILED_AT = "x-sagaline-first-failed-at"
H_LAST_FAILED_AT = "x-sagaline-last-failed-at"
H_REPLAY_COUNT = "x-sagaline-replay-count"
H_CAUSATION_ID = "x-causation-id"
H_SCHEMA_VERSION = "x-schema-version"


class ParkReason(StrEnum):
    """Why a message sits in a parking queue (the value of the x-sagaline-reason header)."""

    OVERSIZED = "oversized"
    WRONG_CONTENT_TYPE = "wrong-content-type"
    MALFORMED_JSON = "malformed-json"
    INVALID_ENVELOPE = "invalid-envelope"
    UNKNOWN_TYPE = "unknown-type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported-schema-version"
    SCHEMA_INVALID = "schema-invalid"
    UNEXPECTED_TYPE = "unexpected-type"
    UNKNOWN_SAGA = "unknown-saga"
    WRONG_WORKFLOW = "wrong-workflow"
    RETRIES_EXHAUSTED = "retries-exhausted"
    DELIVERY_LIMIT = "delivery-limit"
    """Set by the broker (x-death) when a message crashed its consumer too often."""
    UNAUTHORIZED_SENDER = "unauthorized-sender"
    """The message's broker user (its `user_id` property, vouched for by RabbitMQ) is not one
    this consumer takes such messages from (SAGALINE_COMMAND_SENDERS, SAGALINE_REPLY_SENDERS)."""
    REJECTED = "rejected"
    """Set by the broker (x-death): the consumer could not publish a parking copy of the message
    (e.g. a header it cannot encode) and had the broker dead-letter it as it came."""


@dataclass(frozen=True)
class Topology:
    namespace: str = "sagaline"
    retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000)
    delivery_limit: int = 20
    extra_queue_arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def commands_exchange(self) -> str:
        return f"{self.namespace}.commands"

    @property
    def parking_exchange(self) -> str:
        return f"{self.namespace}.parking"

    def work_queue(self, consumer: str) -> str:
        return f"{self.namespace}.{consumer}"

    def retry_queue(self, consumer: str, delay_ms: int) -> str:
        return f"{self.work_queue(consumer)}.retry.{delay_ms}ms"

    def parking_queue(self, consumer: str) -> str:
        return f"{self.work_queue(consumer)}.parking"

    def work_queue_arguments(self, consumer: str) -> dict[str, Any]:
        # The delivery limit is a backstop for messages that crash the process before our own
        # handling can retry or park them; the broker then dead-letters them to parking.
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-overflow": "reject-publish",
            "x-dead-letter-strategy": "at-least-once",
            "x-dead-letter-exchange": self.parking_exchange,
            "x-dead-letter-routing-key": self.work_queue(consumer),
            **self.extra_queue_arguments,
        }

    def retry_queue_arguments(self, consumer: str, delay_ms: int) -> dict[str, Any]:
        # A queue per delay: per-message TTL would block behind the head of the queue.
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": delay_ms,
            "x-overflow": "reject-publish",
            "x-dead-letter-strategy": "at-least-once",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.work_queue(consumer),
        }

    def parking_queue_arguments(self) -> dict[str, Any]:
        # Classic on purpose: operators peek at parked messages by taking them and letting them
        # return in order. A quorum queue counts each return towards a delivery limit (20 by
        # default on RabbitMQ 4) and would eventually drop what it parks.
        return {"x-queue-type": "classic"}
