"""The benchmark's smoke run: `sagaline bench --quick` against the test run's services."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bench: runs `sagaline bench --quick` end to end (a smoke run, < 1 min)"
    )
