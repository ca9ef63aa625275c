"""The AsyncAPI 3.0 document of sagaline's messaging, built from the contracts.

One channel per routing key (the message type) on the events or commands exchange, one message
per type (its envelope and payload, schema version, AMQP bindings), and one operation per message
from sagaline's side: it receives the events services publish and the workers' replies, and
sends commands to workers and outcome events to whoever listens. Which events start a saga is
orchestrator knowledge, so the caller passes it in (`WorkflowFacts`); everything else comes from
this package. Pure: the CLI writes the result, the orchestrator serves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from contracts import behaviour
from contracts.base import Command, Message, ReplyEvent
from contracts.examples import EXAMPLES, example_json
from contracts.registry import MESSAGE_TYPES
from contracts.replies import REPLIES, command_answered_by
from contracts.routes import worker_for
from contracts.schema_export import (
    KIND_KEY,
    SCHEMA_VERSION_KEY,
    Schema,
    envelope_properties,
    kind_of,
)
from contracts.topology import H_ATTEMPT, H_REASON, H_REPLAY_COUNT, Topology

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
_COMPONENT_SCHEMA = "#/components/schemas/{model}"


@dataclass(frozen=True)
class WorkflowFacts:
    """What the orchestrator knows of one workflow: the events it takes and those that start it."""

    name: str
    starts: frozenset[str]
    consumes: frozenset[str]


def _channel_id(message: type[Message]) -> str:
    return f"{_exchange_role(message)}.{message.message_type}"


def _exchange_role(message: type[Message]) -> str:
    return "commands" if issubclass(message, Command) else "events"


def _exchange_name(topology: Topology, role: str) -> str:
    names = {
        "events": topology.events_exchange,
        "commands": topology.commands_exchange,
        "parking": topology.parking_exchange,
    }
    return names[role]


def _exchange(topology: Topology, role: str) -> Schema:
    return {
        "name": _exchange_name(topology, role),
        "type": behaviour.EXCHANGE_TYPES[role],
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }


class _Schemas:
    """Payload schemas under components/schemas; nested models are shared by name."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def add(self, message: type[Message]) -> Schema:
        generated = message.model_json_schema(ref_template=_COMPONENT_SCHEMA)
        for name, schema in generated.pop("$defs", {}).items():
            self._put(name, schema)
        self._put(message.__name__, generated)
        return {"$ref": _COMPONENT_SCHEMA.format(model=message.__name__)}

    def _put(self, name: str, schema: Schema) -> None:
        if self.components.setdefault(name, schema) != schema:
            raise ValueError(f"two different models are named {name}")


def _role(message: type[Message], workflows: Sequence[WorkflowFacts]) -> dict[str, Any]:
    """Who sends and who takes a message, as extension fields and a one-line summary."""
    name = message.message_type
    taken_by = [w.name for w in workflows if name in w.consumes]
    starts = [w.name for w in workflows if name in w.starts]
    if issubclass(message, Command):
        worker = worker_for(message)
        replies = [r.message_type for r in REPLIES[message]]
        return {
            "summary": f"Command from the orchestrator to the {worker} worker.",
            "x-sagaline-consumer": worker,
            "x-sagaline-replies": replies,
        }
    if issubclass(message, ReplyEvent):
        command = command_answered_by(message)
        return {
            "summary": (
                f"Reply of the {worker_for(command)} worker to {command.message_type}"
                f" (its causation_id is the command's message_id)."
            ),
            "x-sagaline-answers": command.message_type,
            "x-sagaline-workflows": taken_by,
        }
    if taken_by:
        summary = "Event your service publishes; sagaline's orchestrator takes it"
        if starts:
            summary += f" and it starts a saga of workflow {', '.join(starts)}"
        return {
            "summary": summary + ".",
            "x-sagaline-workflows": taken_by,
            "x-sagaline-starts-saga": starts,
        }
    return {
        "summary": (
            "Event the orchestrator publishes when a saga ends; bind a queue of your own to"
            " this routing key to learn outcomes."
        )
    }


def _message(message: type[Message], payload: Schema, role: dict[str, Any]) -> Schema:
    body: Schema = {
        "name": message.message_type,
        "title": message.message_type,
        "summary": role["summary"],
    }
    if message.__doc__:  # a class's own docstring (class docstrings are not inherited)
        body["description"] = " ".join(message.__doc__.split())
    body |= {
        "contentType": behaviour.CONTENT_TYPE,
        "correlationId": {
            "description": "The saga id.",
            "location": "$message.payload#/correlation_id",
        },
        "headers": {
            "type": "object",
            "properties": {
                name: {"description": text} for name, text in behaviour.MESSAGE_HEADERS.items()
            },
        },
        "payload": {
            "type": "object",
            "properties": envelope_properties(message, payload),
            "required": ["message_id", "correlation_id", "type", "occurred_at", "payload"],
            "additionalProperties": False,
        },
        "bindings": {
            "amqp": {"messageType": message.message_type, "bindingVersion": AMQP_BINDING_VERSION}
        },
        KIND_KEY: kind_of(message),
        SCHEMA_VERSION_KEY: message.schema_version,
        **{key: value for key, value in role.items() if key.startswith("x-")},
    }
    if message.message_type in EXAMPLES:
        body["examples"] = [
            {"name": "example", "payload": example_json(message.message_type)},
        ]
    return body


def _operation(message: type[Message], workflows: Sequence[WorkflowFacts]) -> tuple[str, Schema]:
    name = message.message_type
    receives = any(name in w.consumes for w in workflows)
    action = "receive" if receives else "send"
    channel = f"#/channels/{_channel_id(message)}"
    bindings: Schema = {"deliveryMode": behaviour.PERSISTENT, "cc": [name]}
    bindings |= {"ack": True} if receives else {"mandatory": True}
    operation: Schema = {
        "action": action,
        "channel": {"$ref": channel},
        "messages": [{"$ref": f"{channel}/messages/{name}"}],
        "bindings": {"amqp": {**bindings, "bindingVersion": AMQP_BINDING_VERSION}},
    }
    if issubclass(message, Command):
        operation["x-sagaline-replies"] = [
            {"$ref": f"#/components/messages/{reply.message_type}"} for reply in REPLIES[message]
        ]
    return f"{action}{name}", operation


PARKED_HEADERS = "ParkedMessageHeaders"


def _parked_headers() -> Schema:
    """The headers of a retried or parked copy, as a schema that AsyncAPI tools can render."""
    properties: Schema = {
        name: {"type": "string", "description": text}
        for name, text in behaviour.PARKING_HEADERS.items()
    }
    properties[H_REASON] |= {"enum": [reason.value for reason in behaviour.PARK_REASONS]}
    properties[H_ATTEMPT] |= {"type": "integer", "minimum": 0}
    properties[H_REPLAY_COUNT] |= {"type": "integer", "minimum": 0}
    return {"type": "object", "properties": properties}


def _parking(topology: Topology) -> Schema:
    return {
        "description": (
            "A message that can never succeed is parked at once; one that keeps failing is"
            " retried after each delay and then parked. Parked copies sit in"
            f" `{topology.parking_queue('<consumer>')}` (consumer `orchestrator` for"
            " events), reached through the parking exchange, with the headers below."
            " Operators list, replay and purge them with `sagaline dlq`."
        ),
        "exchange": _exchange(topology, "parking"),
        "retryDelaysMs": list(topology.retry_delays_ms),
        "reasons": {reason.value: text for reason, text in behaviour.PARK_REASONS.items()},
        "headers": dict(behaviour.PARKING_HEADERS),
        "headersSchema": {"$ref": f"#/components/schemas/{PARKED_HEADERS}"},
    }


def _publishing(topology: Topology) -> Schema:
    return {
        "exchange": topology.events_exchange,
        "routingKey": "the message type (the envelope's `type`)",
        "properties": dict(behaviour.AMQP_PROPERTIES),
        "idempotency": (
            "Publishing again with the same message_id is safe: the orchestrator's inbox records"
            " it once and acknowledges the copy without effect. A second starting event for a"
            " business key that already has a saga is a recorded no-op."
        ),
    }


def build_asyncapi(
    workflows: Sequence[WorkflowFacts],
    *,
    version: str,
    topology: Topology | None = None,
    messages: Iterable[type[Message]] | None = None,
) -> Schema:
    """The AsyncAPI 3.0 document (a JSON-ready dict, deterministic order)."""
    topology = topology or Topology()
    chosen = sorted(
        MESSAGE_TYPES.values() if messages is None else messages, key=lambda m: m.message_type
    )
    schemas = _Schemas()
    channels: Schema = {}
    operations: Schema = {}
    components: Schema = {}
    for message in chosen:
        name = message.message_type
        components[name] = _message(message, schemas.add(message), _role(message, workflows))
        role = _exchange_role(message)
        channels[_channel_id(message)] = {
            "address": name,
            "title": f"{name} on {_exchange_name(topology, role)}",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": _exchange(topology, role),
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
        operation_id, operation = _operation(message, workflows)
        operations[operation_id] = operation
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "sagaline",
            "version": version,
            "description": (
                "Messages of the sagaline saga orchestrator. Services publish the events marked"
                " `x-sagaline-workflows` to the events exchange with the message type as routing"
                " key; the orchestrator answers with commands to its workers and, when a saga"
                " ends, publishes an outcome event. Every body is a JSON envelope"
                f" (namespace `{topology.namespace}`)."
            ),
        },
        "defaultContentType": behaviour.CONTENT_TYPE,
        "servers": {
            "rabbitmq": {
                "host": "{host}",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "pathname": "/",
                "variables": {"host": {"default": "localhost:5672"}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": components,
            "schemas": dict(
                sorted({**schemas.components, PARKED_HEADERS: _parked_headers()}.items())
            ),
        },
        "x-sagaline-publishing": _publishing(topology),
        "x-sagaline-parking": _parking(topology),
    }
