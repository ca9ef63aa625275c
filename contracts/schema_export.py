"""JSON Schema (2020-12) documents of the envelope and of every message, from the pydantic models.

One document per message type describes the complete JSON body a publisher sends: the envelope
with `type` fixed to the message's name, `schema_version` bounded by the version this build
reads, and `payload` the message itself. `envelope` describes the envelope of any message.
Pure functions: the CLI writes the documents, the orchestrator serves them.

What JSON Schema cannot say is enforced on top (see contracts.storable): no text with NUL or lone
surrogates, integers within BIGINT, finite numbers, timestamps that stay in range in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

from contracts.base import Command, Message, ReplyEvent
from contracts.envelope import Envelope, EnvelopeHeader, envelope_model
from contracts.registry import MESSAGE_TYPES

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_VERSION_KEY = "x-sagaline-schema-version"
"""The message's schema_version in this build: breaking changes need it raised (contracts check)."""
KIND_KEY = "x-sagaline-kind"
ENVELOPE = "envelope"
"""The name of the envelope's own document (message documents are named by their type)."""

Kind = Literal["event", "command", "reply"]

ENVELOPE_FIELDS: dict[str, str] = {
    "message_id": (
        "A UUID unique to this message. It is the receiver's inbox key: publishing again with the"
        " same message_id is recorded as a duplicate and changes nothing."
    ),
    "correlation_id": (
        "The saga id (a UUID). A starting event picks a new one; every later message of that"
        " saga carries it."
    ),
    "causation_id": (
        "The message_id of the message that caused this one (a reply names its command); null"
        " for events that start or steer a saga."
    ),
    "type": "The message type; also the AMQP routing key and the `type` property.",
    "schema_version": (
        "The payload's schema version; a value above the version this build reads is parked as"
        " unsupported-schema-version."
    ),
    "occurred_at": "When it happened: RFC 3339 (a time without an offset is read as UTC).",
    "payload": "The message itself: the fields of the message type, nothing else.",
}
"""What each envelope field means (a unit test keeps it in step with the Envelope model)."""


def kind_of(message: type[Message]) -> Kind:
    if issubclass(message, Command):
        return "command"
    return "reply" if issubclass(message, ReplyEvent) else "event"


def _described(properties: Schema) -> Schema:
    return {
        name: {**schema, "description": ENVELOPE_FIELDS[name]}
        if name in ENVELOPE_FIELDS
        else schema
        for name, schema in properties.items()
    }


def envelope_properties(message: type[Message], payload: Schema) -> Schema:
    """The envelope's properties for one message type, with `payload` as given."""
    properties = dict(envelope_model(message).model_json_schema()["properties"])
    properties["type"] = {"const": message.message_type}
    properties["schema_version"] = {
        **properties["schema_version"],
        "maximum": message.schema_version,
    }
    properties["payload"] = payload
    return _described(properties)


def _required(model: type[Envelope[Any]] | type[EnvelopeHeader]) -> list[str]:
    return [name for name, field in model.model_fields.items() if field.is_required()]


def message_schema(message: type[Message]) -> Schema:
    """The complete body of one message type (envelope and payload), a standalone document."""
    generated = envelope_model(message).model_json_schema()
    definitions: Schema = generated["$defs"]
    payload_ref = generated["properties"]["payload"]
    description = definitions[payload_ref["$ref"].rsplit("/", 1)[-1]].get("description")
    return {
        "$schema": DIALECT,
        "title": message.message_type,
        **({"description": description} if description else {}),
        KIND_KEY: kind_of(message),
        SCHEMA_VERSION_KEY: message.schema_version,
        "type": "object",
        "properties": envelope_properties(message, payload_ref),
        "required": _required(envelope_model(message)),
        "additionalProperties": False,
        "$defs": definitions,
    }


def envelope_schema() -> Schema:
    """The envelope of any message: its payload is checked against the type's own document."""
    properties = dict(EnvelopeHeader.model_json_schema()["properties"])
    properties["payload"] = {"type": "object"}
    return {
        "$schema": DIALECT,
        "title": "Envelope",
        "description": (
            "The JSON body of every sagaline message. The message type's own schema"
            " (<type>.json) fixes `type` and describes `payload`."
        ),
        "type": "object",
        "properties": _described(properties),
        "required": [*_required(EnvelopeHeader), "payload"],
        "additionalProperties": False,
    }


def schema_documents(messages: Iterable[type[Message]] | None = None) -> dict[str, Schema]:
    """Every document by name: the envelope first, then the message types in name order."""
    chosen = MESSAGE_TYPES.values() if messages is None else messages
    documents: dict[str, Schema] = {ENVELOPE: envelope_schema()}
    for message in sorted(chosen, key=lambda m: m.message_type):
        documents[message.message_type] = message_schema(message)
    return documents


def render(document: Schema) -> str:
    """A document as the text of its file (stable: the drift test compares it byte for byte)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
