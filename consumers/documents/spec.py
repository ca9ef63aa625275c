"""The documents worker: drafts, finals, the library and the master index, in schema `documents`."""

from __future__ import annotations

from consumers.documents import tables
from consumers.documents.handlers import make_handlers
from consumers.runtime import WorkerSpec
from contracts.routes import WORKER_COMMANDS

SPEC = WorkerSpec(
    name="documents",
    schema=tables.SCHEMA,
    metadata=tables.metadata,
    inbox=tables.inbox,
    commands=WORKER_COMMANDS["documents"],
    make_handlers=make_handlers,
    description=(
        "drafts, finals, document library and master index with versions "
        "(GenerateDraft, GenerateFinal, FileDocument, UpdateMasterIndex and their undos)"
    ),
)
