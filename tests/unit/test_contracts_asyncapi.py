"""The AsyncAPI document: valid by the official AsyncAPI 3.0.0 JSON Schema, every reference
resolves, and what it states matches what the code does (workflows, replies, broker facts,
parking reasons and headers)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from jsonschema import Draft7Validator

from contracts import behaviour
from contracts import topology as topology_module
from contracts.asyncapi import build_asyncapi
from contracts.base import Command, ReplyEvent
from contracts.examples import EXAMPLES
from contracts.registry import MESSAGE_TYPES, commands, reply_types
from contracts.replies import REPLIES
from contracts.routes import worker_for
from contracts.topology import ParkReason, Topology
from orchestrator.contract_docs import ASYNCAPI_FILE, contract_documents, workflow_facts
from orchestrator.workflows import WORKFLOWS
from sagaline.messaging.declare import declare_exchanges
from sagaline.messaging.publish import amqp_message

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_SCHEMA = ROOT / "tests" / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json"
# schemas/3.0.0-without-$id.json of the npm package @asyncapi/specs 6.11.1, unchanged.
OFFICIAL_SHA256 = "abe96881dbfaad495ccbb6bd8d3fb43ca18a13b9d7564849ccb66f39d5e5b20f"


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    raw = OFFICIAL_SCHEMA.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == OFFICIAL_SHA256, "the vendored schema was edited"
    schema = json.loads(raw)
    assert schema["title"] == "AsyncAPI 3.0.0 schema."
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return contract_documents()[ASYNCAPI_FILE]


def errors(validator: Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]


def test_the_document_is_valid_asyncapi_3(
    validator: Draft7Validator, document: dict[str, Any]
) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert errors(validator, document) == []
    checked_in = json.loads((ROOT / "contracts" / "schema" / ASYNCAPI_FILE).read_text())
    assert errors(validator, checked_in) == []


@pytest.mark.parametrize(
    "path",
    [
        ("operations", "receiveOrderSubmitted", "action"),
        ("channels", "events.OrderSubmitted", "bindings", "amqp", "exchange", "type"),
        ("operations", "sendProcessPayment", "bindings", "amqp", "deliveryMode"),
        ("components", "messages", "OrderSubmitted", "correlationId", "location"),
    ],
)
def test_the_validator_catches_a_broken_document(
    validator: Draft7Validator, document: dict[str, Any], path: tuple[str, ...]
) -> None:
    """Guards the guard: a wrong value in any of these places fails validation."""
    broken = copy.deepcopy(document)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = 3
    assert errors(validator, broken)


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = set(_refs(document))
    assert len(refs) > 200
    for ref in refs:
        assert ref.startswith("#/"), ref
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in target, ref
            target = target[part]


def test_every_message_has_a_channel_an_operation_and_its_version(
    document: dict[str, Any],
) -> None:
    messages = document["components"]["messages"]
    assert set(messages) == set(MESSAGE_TYPES)
    for name, message_class in MESSAGE_TYPES.items():
        exchange = "commands" if issubclass(message_class, Command) else "events"
        channel = document["channels"][f"{exchange}.{name}"]
        assert channel["address"] == name  # the routing key
        assert channel["bindings"]["amqp"]["exchange"]["name"] == f"sagaline.{exchange}"
        assert messages[name]["x-sagaline-schema-version"] == message_class.schema_version
        assert messages[name]["payload"]["properties"]["type"] == {
            "const": name,
            "description": messages[name]["payload"]["properties"]["type"]["description"],
        }
        operations = [o for o in document["operations"].values() if name in json.dumps(o)]
        assert operations, name


def test_starting_events_and_consumers_are_the_workflows(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    for name, machine in WORKFLOWS.items():
        for event in machine.consumed_events:
            assert name in messages[event]["x-sagaline-workflows"]
            assert document["operations"][f"receive{event}"]["action"] == "receive"
        for event in machine.starts:
            assert messages[event]["x-sagaline-starts-saga"] == [name]
    starters = {n for n, m in messages.items() if m.get("x-sagaline-starts-saga")}
    assert starters == {
        "OrderSubmitted",
        "OrderCancellationRequested",
        "EnrollmentRequested",
        "DocumentChangeDetected",
    }


def test_the_outcome_events_are_sent_and_named(document: dict[str, Any]) -> None:
    consumed = {e for m in WORKFLOWS.values() for e in m.consumed_events}
    outcomes = {
        name
        for name, cls in MESSAGE_TYPES.items()
        if not issubclass(cls, (Command, ReplyEvent)) and name not in consumed
    }
    assert outcomes == {
        "OrderCompleted",
        "OrderFailed",
        "EnrollmentCompleted",
        "EnrollmentFailed",
        "DocumentApprovalCompleted",
        "DocumentApprovalFailed",
    }
    for name in outcomes:
        assert document["operations"][f"send{name}"]["action"] == "send"


def test_replies_answer_exactly_one_command_and_the_workflows_wait_for_them(
    document: dict[str, Any],
) -> None:
    assert set(REPLIES) == set(commands())
    answered = [reply for replies in REPLIES.values() for reply in replies]
    assert sorted(r.message_type for r in answered) == sorted(r.message_type for r in reply_types())
    consumed = {e for m in WORKFLOWS.values() for e in m.consumed_events}
    assert {r.message_type for r in answered} <= consumed
    for machine in WORKFLOWS.values():
        for undo, confirmation in machine.compensations.items():
            undo_class = cast(type[Command], MESSAGE_TYPES[undo])
            assert confirmation in [r.message_type for r in REPLIES[undo_class]]
    for command, replies in REPLIES.items():
        operation = document["operations"][f"send{command.message_type}"]
        assert operation["x-sagaline-replies"] == [
            {"$ref": f"#/components/messages/{r.message_type}"} for r in replies
        ]
        message = document["components"]["messages"][command.message_type]
        assert message["x-sagaline-consumer"] == worker_for(command)
        for reply in replies:
            answer = document["components"]["messages"][reply.message_type]
            assert answer["x-sagaline-answers"] == command.message_type


def test_the_examples_are_the_inbound_events(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    inbound = {n for n, m in messages.items() if "x-sagaline-workflows" in m}
    inbound -= {r.message_type for r in reply_types()}
    assert set(EXAMPLES) == inbound
    for name in EXAMPLES:
        assert messages[name]["examples"][0]["payload"]["type"] == name


class RecordingChannel:
    def __init__(self) -> None:
        self.exchanges: dict[str, tuple[str, bool]] = {}

    async def declare_exchange(self, name: str, kind: Any, *, durable: bool) -> None:
        self.exchanges[name] = (str(kind.value), durable)


async def test_the_broker_facts_are_what_the_runtime_declares_and_publishes() -> None:
    topology = Topology(namespace="acme")
    channel = RecordingChannel()
    await declare_exchanges(channel, topology)  # type: ignore[arg-type]
    document = build_asyncapi(workflow_facts(), version="1", topology=topology)
    declared = {
        channel_doc["bindings"]["amqp"]["exchange"]["name"]: (
            channel_doc["bindings"]["amqp"]["exchange"]["type"],
            channel_doc["bindings"]["amqp"]["exchange"]["durable"],
        )
        for channel_doc in document["channels"].values()
    }
    parking = document["x-sagaline-parking"]["exchange"]
    declared[parking["name"]] = (parking["type"], parking["durable"])
    assert declared == channel.exchanges
    assert document["x-sagaline-publishing"]["exchange"] == "acme.events"

    sample = amqp_message(b"{}", message_id="m", correlation_id="c", message_type="T")
    assert sample.content_type == behaviour.CONTENT_TYPE == document["defaultContentType"]
    assert int(sample.delivery_mode) == behaviour.PERSISTENT
    for operation in document["operations"].values():
        assert operation["bindings"]["amqp"]["deliveryMode"] == behaviour.PERSISTENT


def test_every_parking_reason_and_header_is_documented(document: dict[str, Any]) -> None:
    assert set(document["x-sagaline-parking"]["reasons"]) == {r.value for r in ParkReason}
    headers = {
        value
        for name, value in vars(topology_module).items()
        if name.startswith("H_") and isinstance(value, str)
    }
    documented = set(behaviour.PARKING_HEADERS) | set(behaviour.MESSAGE_HEADERS)
    assert documented == headers
    assert set(document["x-sagaline-parking"]["headers"]) == set(behaviour.PARKING_HEADERS)
    schema = document["components"]["schemas"]["ParkedMessageHeaders"]
    assert set(schema["properties"]) == set(behaviour.PARKING_HEADERS)
    reason = schema["properties"][topology_module.H_REASON]
    assert set(reason["enum"]) == {r.value for r in ParkReason}
