"""Which workflows a process runs: the `module:attribute` of a Workflows value (settings).

The default is this package's WORKFLOWS. A deploy that changes a workflow points at a value that
loads the new version and keeps the previous ones (tests/order_v2.py shows one). The snapshots
of a workflow set live in `versions/` beside the module that defines it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from orchestrator.engine.registry import Workflows
from sagaline.messaging.errors import ReportableError

SNAPSHOT_FOLDER = "versions"


class WorkflowsNotFound(ReportableError):
    """The configured workflows cannot be imported, or are not a Workflows value."""


def load_workflows(spec: str) -> Workflows:
    module_name, attribute = _split(spec)
    module = _import(spec, module_name)
    value = getattr(module, attribute, None)
    if not isinstance(value, Workflows):
        raise WorkflowsNotFound(
            f"{attribute} in {module_name} is not a Workflows value (SAGALINE_WORKFLOWS={spec})"
        )
    return value


def snapshot_directory(spec: str) -> Path:
    """`versions/` beside the module (inside the package) that defines the workflows."""
    module_name, _ = _split(spec)
    module = _import(spec, module_name)
    if module.__file__ is None:
        raise WorkflowsNotFound(f"{module_name} is not a file (SAGALINE_WORKFLOWS={spec})")
    return Path(module.__file__).parent / SNAPSHOT_FOLDER


def _split(spec: str) -> tuple[str, str]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise WorkflowsNotFound(f"SAGALINE_WORKFLOWS={spec} is not module:attribute")
    return module_name, attribute


def _import(spec: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkflowsNotFound(f"cannot import {exc.name} (SAGALINE_WORKFLOWS={spec})") from None
