"""sagaline bench --repeat N: the latency pair is measured N times, interleaved, and the round
with the median p99 ratio is the verdict."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagaline_tools.bench import latency
from sagaline_tools.bench.config import BenchConfig


def test_the_round_with_the_median_ratio_is_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    relay_p99 = iter([10.0, 12.0, 10.0])
    orchestrator_p99 = iter([50.0, 30.0, 29.0])  # ratios 5.0, 2.5, 2.9
    calls: list[str] = []

    async def relay(*_: Any) -> dict[str, Any]:
        calls.append("relay")
        return {"p99_ms": next(relay_p99)}

    async def orchestrator(*_: Any) -> dict[str, Any]:
        calls.append("orchestrator")
        return {"p99_ms": next(orchestrator_p99)}

    monkeypatch.setattr(latency, "relay_latency", relay)
    monkeypatch.setattr(latency, "orchestrator_latency", orchestrator)
    config = BenchConfig(sections=("latency",), latency_rate=900.0, repeat=3)

    result = asyncio.run(latency.run(None, config, None, None))  # type: ignore[arg-type]

    assert calls == ["relay", "orchestrator"] * 3  # interleaved, each pair at the same rate
    assert result["p99_ratio"] == pytest.approx(2.9)
    assert (result["p99_ms"], result["relay"]["p99_ms"]) == (29.0, 10.0)
    assert result["rounds"] == pytest.approx([5.0, 2.5, 2.9])
