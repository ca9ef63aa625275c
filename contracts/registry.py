"""Every message type by its wire name. Importing this module registers all workflows' messages."""

from __future__ import annotations

from contracts import documents, enrollment, order
from contracts.base import Command, Event, Message, ReplyEvent

MODULES = (order, enrollment, documents)
"""The modules whose message classes make up the contracts, one per workflow."""


def _collect(*modules: object) -> dict[str, type[Message]]:
    found: dict[str, type[Message]] = {}
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Message)
                and value.__module__ == getattr(module, "__name__", None)
                and "message_type" in value.__dict__
            ):
                if value.message_type in found:
                    raise RuntimeError(f"message type {value.message_type!r} defined twice")
                found[value.message_type] = value
    return found


MESSAGE_TYPES: dict[str, type[Message]] = _collect(*MODULES)


def message_class(type_name: str) -> type[Message] | None:
    return MESSAGE_TYPES.get(type_name)


def commands() -> list[type[Command]]:
    return [m for m in MESSAGE_TYPES.values() if issubclass(m, Command)]


def events() -> list[type[Event]]:
    return [m for m in MESSAGE_TYPES.values() if issubclass(m, Event)]


def reply_types() -> list[type[ReplyEvent]]:
    return [m for m in MESSAGE_TYPES.values() if issubclass(m, ReplyEvent)]
