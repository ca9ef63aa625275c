"""Every message type by its wire name. Importing this module registers all workflows' messages."""

from __future__ import annotations

from contracts import order
from contracts.base import Command, Event, Message, ReplyEvent


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


_MODULES: list[object] = [order]
from contracts import enrollment  # noqa: E402 - registered at its marker line

_MODULES.append(enrollment)
# enrollment-contracts-here
from contracts import documents  # noqa: E402 - registered at its marker line

_MODULES.append(documents)
# documents-contracts-here

MESSAGE_TYPES: dict[str, type[Message]] = _collect(*_MODULES)


def message_class(type_name: str) -> type[Message] | None:
    return MESSAGE_TYPES.get(type_name)


def commands() -> list[type[Command]]:
    return [m for m in MESSAGE_TYPES.values() if issubclass(m, Command)]


def events() -> list[type[Event]]:
    return [m for m in MESSAGE_TYPES.values() if issubclass(m, Event)]


def reply_types() -> list[type[ReplyEvent]]:
    return [m for m in MESSAGE_TYPES.values() if issubclass(m, ReplyEvent)]
