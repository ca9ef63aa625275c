"""The published contract as files: the AsyncAPI document and one JSON Schema per message.

The orchestrator adds what only it knows (which events each workflow takes and which start a
saga) to the contracts' own builders. The CLI writes these documents to `contracts/schema/`;
a running orchestrator serves them, built for its own namespace.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from contracts.asyncapi import WorkflowFacts, build_asyncapi
from contracts.schema_export import Schema, schema_documents
from contracts.topology import Topology
from orchestrator.engine.registry import Workflows
from orchestrator.workflows import WORKFLOWS

ASYNCAPI_FILE = "asyncapi.json"


def workflow_facts(workflows: Workflows = WORKFLOWS) -> tuple[WorkflowFacts, ...]:
    return tuple(
        WorkflowFacts(
            name=name,
            starts=frozenset(machine.starts),
            consumes=frozenset(machine.consumed_events),
        )
        for name, machine in workflows.items()
    )


def package_version() -> str:
    try:
        return version("sagaline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def contract_documents(topology: Topology | None = None) -> dict[str, Schema]:
    """Every document by file name: `asyncapi.json`, `envelope.json`, `<MessageType>.json`."""
    documents = {
        ASYNCAPI_FILE: build_asyncapi(
            workflow_facts(), version=package_version(), topology=topology
        )
    }
    documents |= {f"{name}.json": schema for name, schema in schema_documents().items()}
    return documents
