"""Base classes of every message: frozen, strict, no unknown fields."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

from contracts.storable import check_storable

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
"""Identifiers, names, reasons: anything a human may read in a log line or a table cell."""

LongText = Annotated[str, StringConstraints(max_length=4000)]
"""Free text such as comments; bounded so one message cannot carry megabytes of prose."""

Code = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
"""ISO 3166-1 alpha-2 country codes and similar two-letter codes."""

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


_ABSTRACT = frozenset({"Event", "Command", "ReplyEvent"})


class Message(BaseModel):
    """A message body. `message_type` is the name on the wire and the routing key."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    message_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # Abstract intermediates (Event, Command, ReplyEvent) have no type name of their own.
        if "message_type" not in cls.__dict__ and cls.__name__ not in _ABSTRACT:
            cls.message_type = cls.__name__

    @model_validator(mode="after")
    def _storable(self) -> Message:
        # Whatever pydantic accepts must also fit PostgreSQL (contracts.storable says why).
        check_storable(self)
        return self


class Event(Message):
    """Something that happened (past tense). Routed through the events exchange."""


class ReplyEvent(Event):
    """An event a worker publishes in answer to a command.

    Its envelope's causation id is the command's message id; the engine uses that to fence
    replies to commands it no longer waits for (stale replies after a retry or a timeout).
    """


class Command(Message):
    """An instruction to one worker (imperative). Routed through the commands exchange."""
