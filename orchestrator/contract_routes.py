"""`GET /asyncapi.json` and `GET /schemas/<type>.json`: the contract of the running build.

Documents are built on the first request (half a second of schema generation that a process
which is never asked should not pay at startup) for the process's own namespace, then served
from memory. An unknown name is a JSON 404 naming where the list is.
"""

from __future__ import annotations

import asyncio
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
    """The rendered documents by file name, built once, off the event loop (the loop keeps
    handling messages meanwhile; two first requests at once may both build, harmlessly)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._files: dict[str, bytes] | None = None

    async def files(self) -> dict[str, bytes]:
        if self._files is None:
            self._files = await asyncio.to_thread(self._build)
        return self._files

    def _build(self) -> dict[str, bytes]:
        return {
            name: render(document).encode()
            for name, document in contract_documents(self.topology).items()
        }


def mount_contract_routes(app: ServiceApp, topology: Topology) -> None:
    documents = ContractDocuments(topology)

    @get(include_in_schema=False)
    async def asyncapi(scope: Any) -> AsgiResponse:
        return AsgiResponse((await documents.files())[ASYNCAPI_FILE], 200, _JSON)

    @get(include_in_schema=False)
    async def schemas(scope: Scope) -> AsgiResponse:
        files = await documents.files()
        name = str(scope.get("path", "")).removeprefix(SCHEMAS_PREFIX)
        if not name:
            names = sorted(n for n in files if n != ASYNCAPI_FILE)
            return AsgiResponse(render({"schemas": names}).encode(), 200, _JSON)
        if name != ASYNCAPI_FILE and name in files:
            return AsgiResponse(files[name], 200, _JSON)
        return json_error(
            404,
            "no schema of that name: message types are case-sensitive; GET /schemas/ lists all",
            path=request_path(scope),
        )

    app.mount(ASYNCAPI_PATH, asyncapi)
    app.mount_prefix(SCHEMAS_PREFIX, schemas)
