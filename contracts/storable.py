"""What PostgreSQL can store: every message is checked for it when it is validated.

A value pydantic accepts but the database refuses would fail inside the transaction that applies
the message, be retried as if the failure were transient, and roll back the good messages
batched with it each time. So the contracts refuse such values up front, where the refusal is a
`schema-invalid` parking at once:

- text with NUL (PostgreSQL's text and jsonb cannot hold U+0000) or lone UTF-16 surrogates
  (not encodable as UTF-8);
- integers outside BIGINT;
- floats that are NaN or infinite (jsonb has no such numbers);
- timestamps that leave Python's range when converted to UTC (e.g. year 1 at +05:00).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1

_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")

NOT_STORABLE = "not_storable"
"""The pydantic error type of a refused value; its context names the field's path."""


def unstorable_reason(value: object) -> str | None:
    """Why PostgreSQL would refuse this scalar, or None when it can be stored."""
    if isinstance(value, str):
        if _UNSTORABLE_TEXT.search(value):
            return "text holds NUL or a lone surrogate"
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        if not BIGINT_MIN <= value <= BIGINT_MAX:
            return "integer outside BIGINT"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return "number is not finite"
    elif isinstance(value, datetime):
        return _timestamp_reason(value)
    return None


def _timestamp_reason(value: datetime) -> str | None:
    if value.tzinfo is None:
        return None
    try:
        value.astimezone(UTC)
    except OverflowError:
        return "timestamp out of range"
    return None


def _leaves(value: object, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], object]]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _leaves(getattr(value, name), (*path, name))
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, str(index)))
    elif isinstance(value, dict):
        # Keys are sender input: the path names them only by position.
        for index, (key, item) in enumerate(value.items()):
            yield from _leaves(key, (*path, f"<key {index}>"))
            yield from _leaves(item, (*path, f"<key {index}>"))
    else:
        yield path, value


def _storable(value: object) -> bool:
    """Whether every leaf can be stored: the walk of `_leaves` without building paths.

    Every message is checked when it is built or parsed, on the orchestrator's hot path too
    (3-4% of its CPU went to the path-building walk); the paths are only worth building for
    the rare message that fails. A loop over a stack: no generator or call per container."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is str:  # the common leaf first
            if _UNSTORABLE_TEXT.search(item) is not None:
                return False
        elif isinstance(item, BaseModel):
            # A model's fields are its instance dict (pydantic keeps private state elsewhere).
            pending.extend(item.__dict__.values())
        elif isinstance(item, (tuple, list)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif unstorable_reason(item) is not None:
            return False
    return True


def check_storable(model: BaseModel) -> None:
    """Raise a pydantic error naming the first field PostgreSQL could not store."""
    if _storable(model):
        return
    for path, value in _leaves(model, ()):
        reason = unstorable_reason(value)
        if reason is not None:
            raise PydanticCustomError(
                NOT_STORABLE,
                "{path}: {reason}",
                {"path": ".".join(path), "reason": reason},
            )


def check_timestamp(value: datetime) -> datetime:
    """For timestamp fields outside messages (the envelope's `occurred_at`)."""
    reason = _timestamp_reason(value)
    if reason is not None:
        raise PydanticCustomError(NOT_STORABLE, "{reason}", {"path": "", "reason": reason})
    return value


def error_path(item: dict[str, Any]) -> tuple[str, ...]:
    """The path inside the validated model that a NOT_STORABLE error names (else empty)."""
    if item.get("type") != NOT_STORABLE:
        return ()
    path = str((item.get("ctx") or {}).get("path", ""))
    return tuple(path.split(".")) if path else ()
