"""`GET /asyncapi.json` and `GET /schemas/<type>.json`: the contract of the running build.

Documents are built on the first request (half a second of schema generation that a process
which is never asked should not pay at startup) for the process's own namespace, then served
from memory. An unknown name is a JSON 404 naming where the list is.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from faststream.asgi import AsgiResponse, get
from faststream.asgi.types import Scope

from contracts.schema_export import render
from contracts.topology import Topology
from orchestrator.contract_docs import ASYNCAPI_FILE, contract_documents
from sagaline.http_routes import ServiceApp, json_error, request_path

ASYNCAPI_PATH = "/asyncapi.json"
SCHEMAS_PREFIX = "/schemas/"
_JSON = {"Content-Type": "application/json"}


class ContractDocuments:
    """The rendered documents by file name, built once."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    @cached_property
    def files(self) -> dict[str, bytes]:
        return {
            name: render(document).encode()
            for name, document in contract_documents(self.topology).items()
        }

    def schema_names(self) -> list[str]:
        return sorted(name for name in self.files if name != ASYNCAPI_FILE)


def mount_contract_routes(app: ServiceApp, topology: Topology) -> None:
    documents = ContractDocuments(topology)

    @get(include_in_schema=False)
    async def asyncapi(scope: Any) -> AsgiResponse:
        return AsgiResponse(documents.files[ASYNCAPI_FILE], 200, _JSON)

    @get(include_in_schema=False)
    async def schemas(scope: Scope) -> AsgiResponse:
        path = str(scope.get("path", ""))
        name = path.removeprefix(SCHEMAS_PREFIX)
        if not name:
            return AsgiResponse(render({"schemas": documents.schema_names()}).encode(), 200, _JSON)
        if name != ASYNCAPI_FILE and name in documents.files:
            return AsgiResponse(documents.files[name], 200, _JSON)
        return json_error(
            404,
            "no schema of that name: message types are case-sensitive; GET /schemas/ lists all",
            path=request_path(scope),
        )

    app.mount(ASYNCAPI_PATH, asyncapi)
    app.mount_prefix(SCHEMAS_PREFIX, schemas)
