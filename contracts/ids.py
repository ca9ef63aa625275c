"""Message and saga ids that sort by time, so the tables' indexes stay small where they change.

Every store keys a row by a UUID: the orchestrator's inbox and the workers' by message id, the
sagas and their history by saga id, the outbox by the command's id. Random UUIDs (version 4)
land on random index pages; once the indexes outgrow the buffer cache, nearly every write then
dirties a page not written since the last checkpoint and logs a full-page image of it. At 1M
finished sagas that tripled the WAL per transition (11.6 kB against 3.8 kB with the ids below,
`sagaline bench --only scale`, 2026-12-07 afternoon in docs/benchmark-log.md).

- `uuid7()` (RFC 9562 version 7): 48 bits of Unix milliseconds, then random bits. New ids sort
  after older ones, so new rows share the indexes' few newest pages. Use it for the ids you
  make: a new saga's correlation id, an event's message id.
- `derived_id(base, name)`: deterministic like `uuid.uuid5(base, name)` (the same decision
  made again yields the same id), but it keeps `base`'s first 48 bits. Derived from a version 7
  saga id, a saga's commands, timers and their replies sort with the saga's start. Version 8
  (RFC 9562's custom layout), so it is never mistaken for a true version 5 or 7.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

_TIME_BYTES = 6
"""48 bits: Unix time in milliseconds until the year 10889."""


def uuid7(now_ns: int | None = None) -> uuid.UUID:
    """A version 7 UUID for `now_ns` (nanoseconds since the epoch; default: now)."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    return _with_version(millis.to_bytes(_TIME_BYTES, "big") + os.urandom(10), 7)


def derived_id(base: uuid.UUID, name: str) -> uuid.UUID:
    """The same for the same (base, name); its first 48 bits are `base`'s.

    The bits after the time are `uuid.uuid5(base, name)`'s (the SHA-1 of base and name), so
    ids made by earlier releases are made again: hashed here directly, without building the
    version 5 UUID first (half the cost; a saga step derives one or two of these)."""
    base_bytes = base.bytes
    hashed = hashlib.sha1(base_bytes + name.encode(), usedforsecurity=False).digest()
    return _with_version(base_bytes[:_TIME_BYTES] + hashed[_TIME_BYTES:16], 8)


def _with_version(raw: bytes, version: int) -> uuid.UUID:
    octets = bytearray(raw)
    octets[6] = (octets[6] & 0x0F) | (version << 4)
    octets[8] = (octets[8] & 0x3F) | 0x80  # the RFC 9562 variant
    return uuid.UUID(bytes=bytes(octets))
