"""Hardening of the AMQP client against property values any publisher can set.

pamqp (under aiormq and aio-pika) decodes an AMQP timestamp with `datetime.fromtimestamp`, which
raises for a value past the year 9999. The exception surfaces in aiormq's frame reader and closes
the whole connection: every unacknowledged delivery on it is redelivered (each counting towards
the quorum queue's delivery limit), and the forged message comes back first on the next
connection, so one message published with `timestamp=2**63` knocks a process off the broker over
and over. Decoding such a timestamp as "no timestamp" keeps the connection and lets the message
be handled (and, if its body is bad, parked) like any other.
"""

from __future__ import annotations

import datetime

from pamqp import decode

_STRICT_TIMESTAMP = decode.timestamp
_TIMESTAMP_BYTES = 8


def _lenient_timestamp(value: bytes) -> tuple[int, datetime.datetime | None]:
    try:
        return _STRICT_TIMESTAMP(value)
    except ValueError:
        if len(value) < _TIMESTAMP_BYTES:
            raise  # a truncated frame is a real protocol error
        return _TIMESTAMP_BYTES, None


def install_lenient_timestamps() -> None:
    """Replace pamqp's timestamp decoder for properties and header tables (idempotent)."""
    decode.METHODS["timestamp"] = _lenient_timestamp
    decode.TABLE_MAPPING[b"T"] = _lenient_timestamp
