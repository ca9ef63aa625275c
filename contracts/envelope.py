"""The envelope every message travels in.

The JSON body is the envelope; AMQP properties (message_id, correlation_id, type) mirror it so
that tools which only look at properties (management UI, tracing) still see the ids.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from contracts.base import Message
from contracts.ids import uuid7
from contracts.storable import check_timestamp

M = TypeVar("M", bound=Message)

Timestamp = Annotated[datetime, AfterValidator(check_timestamp)]
"""A timestamp PostgreSQL can store (naive values are read as UTC)."""

TypeName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
]


class EnvelopeHeader(BaseModel):
    """The envelope without its payload: read first to learn which payload model applies."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    message_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    type: TypeName
    schema_version: int = Field(default=1, ge=1, le=1000)
    occurred_at: Timestamp


class Envelope(BaseModel, Generic[M]):
    """A typed envelope: ids, type, schema version, time, and the validated payload."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    message_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    type: TypeName
    schema_version: int = Field(default=1, ge=1, le=1000)
    occurred_at: Timestamp
    payload: M

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


@cache
def envelope_model(payload_model: type[M]) -> type[Envelope[M]]:
    """The parametrised envelope class for one payload model (cached: building it is costly)."""
    return Envelope[payload_model]  # type: ignore[valid-type]


def new_envelope(
    payload: M,
    *,
    correlation_id: uuid.UUID,
    causation_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> Envelope[M]:
    return envelope_model(type(payload))(
        message_id=message_id or uuid7(),
        correlation_id=correlation_id,
        causation_id=causation_id,
        type=payload.message_type,
        schema_version=payload.schema_version,
        occurred_at=occurred_at or datetime.now(UTC),
        payload=payload,
    )
