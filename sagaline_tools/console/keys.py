"""How a parked message is identified and grouped, the same for the index, jobs and the CLI.

A copy's key is its message id (bounded), or a hash of its body when it has none (hostile or
broken publishers); with its replay count it names one parked copy, since a replayed message
that fails again is parked anew with the count raised. The error fingerprint groups failures
that differ only in ids, numbers and quoted values, so "order 123 not found" and "order 456 not
found" land in one group.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from aio_pika.abc import AbstractIncomingMessage

from sagaline.messaging.parking import ParkedMessage

KEY_CHARS = 200

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b(?:0x)?[0-9a-f]{12,}\b", re.I)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_SPACES = re.compile(r"\s+")


def message_key(message_id: str | None, body: bytes) -> str:
    if message_id:
        return message_id[:KEY_CHARS]
    return "sha256:" + hashlib.sha256(body).hexdigest()


def key_of(message: AbstractIncomingMessage, parked: ParkedMessage) -> str:
    return message_key(parked.message_id, message.body)


def error_pattern(reason: str, error: str | None) -> str:
    """The error with its variable parts replaced: what the failures of one group share."""
    text = (error or "").strip()
    text = _UUID.sub("<id>", text)
    text = _HEX.sub("<hex>", text)
    text = _QUOTED.sub("<value>", text)
    text = _NUMBER.sub("<n>", text)
    text = _SPACES.sub(" ", text)[:300]
    return text or f"({reason}, no error text)"


def fingerprint(reason: str, error: str | None) -> str:
    pattern = error_pattern(reason, error)
    return hashlib.sha1(f"{reason}\n{pattern}".encode(), usedforsecurity=False).hexdigest()[:12]


def saga_id_of(correlation_id: str | None) -> uuid.UUID | None:
    """A correlation id is the saga id when it is a UUID (anything else: no saga)."""
    if not correlation_id:
        return None
    try:
        return uuid.UUID(correlation_id)
    except ValueError:
        return None
