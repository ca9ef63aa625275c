"""The deployment scripts under deploy/ (not a package), loaded as modules for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def make_definitions() -> ModuleType:
    """deploy/rabbitmq/make_definitions.py, imported once per test session."""
    if "make_definitions" in sys.modules:
        return sys.modules["make_definitions"]
    path = ROOT / "deploy" / "rabbitmq" / "make_definitions.py"
    spec = importlib.util.spec_from_file_location("make_definitions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_definitions"] = module
    spec.loader.exec_module(module)
    return module
