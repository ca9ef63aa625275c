"""The orchestrator's HTTP routes for its contract: the documents of the running build, for its
namespace, and JSON errors for anything else (the real process is asked in the e2e test)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from contracts.examples import example_json
from contracts.registry import MESSAGE_TYPES
from orchestrator.app import build_app
from sagaline.settings import Settings


@pytest.fixture(scope="module")
def app() -> Any:
    return build_app(Settings(namespace="acme"))


async def get(app: Any, path: str, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    start, body = sent[0], sent[1]
    return start["status"], dict(start["headers"]), body["body"]


async def test_asyncapi_json_is_the_document_for_the_process_namespace(app: Any) -> None:
    status, headers, body = await get(app, "/asyncapi.json")
    assert status == 200
    assert headers[b"content-type"] == b"application/json"
    document = json.loads(body)
    assert document["asyncapi"] == "3.0.0"
    assert document["x-sagaline-publishing"]["exchange"] == "acme.events"
    binding = document["channels"]["events.OrderSubmitted"]["bindings"]["amqp"]
    assert binding["exchange"]["name"] == "acme.events"


async def test_each_message_schema_is_served_and_validates_the_example(app: Any) -> None:
    status, _, body = await get(app, "/schemas/OrderSubmitted.json")
    assert status == 200
    schema = json.loads(body)
    Draft202012Validator(schema).validate(example_json("OrderSubmitted"))
    status, _, body = await get(app, "/schemas/envelope.json")
    assert (status, json.loads(body)["title"]) == (200, "Envelope")


async def test_the_schema_index_lists_every_document(app: Any) -> None:
    status, _, body = await get(app, "/schemas/")
    assert status == 200
    names = json.loads(body)["schemas"]
    assert set(names) == {"envelope.json", *(f"{t}.json" for t in MESSAGE_TYPES)}


@pytest.mark.parametrize(
    "path",
    [
        "/schemas/Nope.json",
        "/schemas/orderSubmitted.json",
        "/schemas/OrderSubmitted",
        "/schemas/../asyncapi.json",
        "/schemas/asyncapi.json",
        "/schemas/" + "A" * 5000 + ".json",
    ],
)
async def test_an_unknown_schema_is_a_json_404(app: Any, path: str) -> None:
    status, headers, body = await get(app, path)
    assert status == 404
    assert headers[b"content-type"] == b"application/json"
    error = json.loads(body)
    assert "no schema of that name" in error["error"]
    assert len(error["path"]) <= 200


async def test_any_other_unknown_path_is_a_json_404(app: Any) -> None:
    status, headers, body = await get(app, "/nothing/here")
    assert (status, headers[b"content-type"]) == (404, b"application/json")
    assert json.loads(body) == {"error": "not found", "path": "/nothing/here"}


async def test_other_methods_are_refused(app: Any) -> None:
    status, _, _ = await get(app, "/schemas/OrderSubmitted.json", method="POST")
    assert status == 405
