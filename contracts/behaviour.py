"""What sagaline does with a message, in words: the documented half of the published contract.

The AsyncAPI document carries these texts; unit tests check that every parking reason and every
`x-sagaline-*` header the code knows is described here, and that the broker facts below match
what the runtime declares and publishes.
"""

from __future__ import annotations

from contracts.topology import (
    H_ATTEMPT,
    H_CAUSATION_ID,
    H_ERROR,
    H_FIRST_FAILED_AT,
    H_LAST_FAILED_AT,
    H_ORIGINAL_QUEUE,
    H_REASON,
    H_REPLAY_COUNT,
    H_SCHEMA_VERSION,
    ParkReason,
)

CONTENT_TYPE = "application/json"
PERSISTENT = 2
"""AMQP delivery mode of everything sagaline publishes, and what publishers should use."""

EXCHANGE_TYPES = {"events": "topic", "commands": "topic", "parking": "direct"}
"""The kind of each exchange (all durable, never auto-deleted), by role."""

PARK_REASONS: dict[ParkReason, str] = {
    ParkReason.OVERSIZED: "The body is larger than SAGALINE_MAX_BODY_BYTES (not parsed).",
    ParkReason.WRONG_CONTENT_TYPE: "The content_type property is set and is not application/json.",
    ParkReason.MALFORMED_JSON: "The body is not JSON (or nests deeper than the parser allows).",
    ParkReason.INVALID_ENVELOPE: (
        "The envelope is incomplete or wrong: a missing or malformed message_id, correlation_id,"
        " type or occurred_at."
    ),
    ParkReason.UNKNOWN_TYPE: "No message type of that name exists.",
    ParkReason.UNSUPPORTED_SCHEMA_VERSION: (
        "schema_version is above the version this build reads (deploy the newer sagaline first)."
    ),
    ParkReason.SCHEMA_INVALID: (
        "The payload does not match its type's schema (a missing, unknown or invalid field), or"
        " holds a value PostgreSQL cannot store (NUL or a lone surrogate in text, an integer"
        " outside BIGINT, a non-finite number, a timestamp out of range in UTC)."
    ),
    ParkReason.UNEXPECTED_TYPE: "A known type this consumer does not handle.",
    ParkReason.UNKNOWN_SAGA: (
        "An event that does not start a saga names a correlation_id no saga has."
    ),
    ParkReason.WRONG_WORKFLOW: (
        "The correlation_id names a saga of another workflow than the event belongs to."
    ),
    ParkReason.RETRIES_EXHAUSTED: "Handling kept failing through every retry delay.",
    ParkReason.DELIVERY_LIMIT: (
        "Set by the broker: the message crashed its consumer more often than the delivery limit."
    ),
    ParkReason.UNAUTHORIZED_SENDER: (
        "A command or reply from a broker user the consumer does not take it from"
        " (SAGALINE_COMMAND_SENDERS, SAGALINE_REPLY_SENDERS)."
    ),
    ParkReason.REJECTED: (
        "Set by the broker: a parking copy could not be published, so the message was"
        " dead-lettered as it came."
    ),
}

PARKING_HEADERS: dict[str, str] = {
    H_REASON: "Why the message was parked: one of the parking reasons.",
    H_ORIGINAL_QUEUE: "The work queue it came from (where a replay sends it back).",
    H_ATTEMPT: "Delivery attempts so far, counted by sagaline.",
    H_ERROR: "A one-line summary of the last error (never payload values).",
    H_FIRST_FAILED_AT: "ISO-8601 time of the first failure.",
    H_LAST_FAILED_AT: "ISO-8601 time of the latest failure.",
    H_REPLAY_COUNT: "How often an operator replayed the message (sagaline dlq replay).",
}
"""Headers sagaline sets on retried and parked copies; a value a publisher sets is replaced."""

MESSAGE_HEADERS: dict[str, str] = {
    H_SCHEMA_VERSION: "Mirrors the envelope's schema_version (optional; the envelope decides).",
    H_CAUSATION_ID: "Mirrors the envelope's causation_id when it has one (optional).",
}
"""Application headers sagaline sets on what it publishes; publishers may leave them out."""

AMQP_PROPERTIES: dict[str, str] = {
    "content_type": f"{CONTENT_TYPE} (any other value is parked as wrong-content-type).",
    "delivery_mode": f"{PERSISTENT} (persistent), so the event survives a broker restart.",
    "message_id": "The envelope's message_id, as text.",
    "correlation_id": "The envelope's correlation_id (the saga id), as text.",
    "type": "The envelope's type.",
}
"""AMQP properties a publisher sets. The JSON envelope is what sagaline reads; the properties
mirror it so that tools that only see properties (management UI, tracing) show the ids."""
