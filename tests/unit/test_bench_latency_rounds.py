"""sagaline bench --repeat N: the latency pair is measured N times, interleaved, and the round
with the median p99 ratio is the verdict; each side's p99 over all rounds is shown beside it."""

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
        steal = {"steal": 0.0} if calls.count("relay") != 2 else {}  # one round unreported
        return {"p99_ms": next(relay_p99), "cpu_cores": steal, latency.TOTALS: [5.0] * 99 + [10.0]}

    async def orchestrator(*_: Any) -> dict[str, Any]:
        calls.append("orchestrator")
        stolen = 0.4 if calls.count("orchestrator") == 1 else 0.01
        return {
            "p99_ms": next(orchestrator_p99),
            "cpu_cores": {"orchestrator": 0.6, "steal": stolen},
            latency.TOTALS: [20.0] * 99 + [30.0],
        }

    monkeypatch.setattr(latency, "relay_latency", relay)
    monkeypatch.setattr(latency, "orchestrator_latency", orchestrator)
    config = BenchConfig(sections=("latency",), latency_rate=900.0, repeat=3)

    result = asyncio.run(latency.run(None, config, None))  # type: ignore[arg-type]

    assert calls == ["orchestrator", "relay"] * 3  # interleaved, each pair at the same rate
    assert result["p99_ratio"] == pytest.approx(2.9)
    assert (result["p99_ms"], result["relay"]["p99_ms"]) == (29.0, 10.0)
    assert result["rounds"] == pytest.approx([5.0, 2.5, 2.9])
    # Pooled: 300 messages a side, three of them slow; the per-message lists stay out of it.
    pooled = result["pooled"]
    # (the 99th percentile sits 1% of the way from the 297th value to the 298th)
    assert pooled["relay_p99_ms"] == pytest.approx(5.0 + 5.0 * 0.01)
    assert pooled["p99_ms"] == pytest.approx(20.0 + 10.0 * 0.01)
    assert pooled["p99_ratio"] == pytest.approx(20.1 / 5.05)
    assert latency.TOTALS not in result and latency.TOTALS not in result["relay"]
    # Each round's stolen cores, [relay, orchestrator]: the first round's orchestrator ran
    # while the hypervisor took 0.4 of a core.
    assert result["rounds_steal"] == [[0.0, 0.4], [None, 0.01], [0.0, 0.01]]
    assert result["rounds_offered_per_s"] == [900.0] * 3  # --latency-rate: nothing measured
    assert result["orchestrator_alone_per_s"] is None


def test_one_round_has_no_pooled_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    async def side(*_: Any) -> dict[str, Any]:
        return {"p99_ms": 10.0, latency.TOTALS: [1.0, 10.0]}

    monkeypatch.setattr(latency, "relay_latency", side)
    monkeypatch.setattr(latency, "orchestrator_latency", side)
    config = BenchConfig(sections=("latency",), latency_rate=900.0, repeat=1)

    result = asyncio.run(latency.run(None, config, None))  # type: ignore[arg-type]

    assert "pooled" not in result and latency.TOTALS not in result


def test_each_round_offers_half_of_what_the_orchestrator_alone_does_just_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine's speed drifts within a run: half of a rate measured minutes earlier can be
    well over half load by the time the round runs, so each round measures it again."""
    alone = iter([1600.0, 1000.0, 1200.0])
    calls: list[tuple[str, float]] = []

    async def orchestrator_alone(*_: Any, rounds: int | None = None) -> dict[str, Any]:
        assert rounds == 1  # one burst per round, whatever --repeat says
        rate = next(alone)
        calls.append(("alone", rate))
        return {"transitions_per_s": rate}

    async def orchestrator(_env: Any, _config: Any, _step: Any, rate: float, orders: float) -> Any:
        calls.append(("orchestrator", rate))
        assert orders == rate / 4  # four transitions per order
        return {"p99_ms": 30.0, "offered_transitions_per_s": rate, latency.TOTALS: [30.0]}

    async def relay(_env: Any, _config: Any, _step: Any, rate: float) -> dict[str, Any]:
        calls.append(("relay", rate))
        return {"p99_ms": 10.0, latency.TOTALS: [10.0]}

    monkeypatch.setattr(latency.orchestrator_run, "run", orchestrator_alone)
    monkeypatch.setattr(latency, "orchestrator_latency", orchestrator)
    monkeypatch.setattr(latency, "relay_latency", relay)
    config = BenchConfig(sections=("latency",), repeat=3)

    result = asyncio.run(latency.run(None, config, None))  # type: ignore[arg-type]

    assert calls == [
        ("alone", 1600.0), ("orchestrator", 800.0), ("relay", 800.0),
        ("alone", 1000.0), ("orchestrator", 500.0), ("relay", 500.0),
        ("alone", 1200.0), ("orchestrator", 600.0), ("relay", 600.0),
    ]  # fmt: skip
    assert result["rounds_offered_per_s"] == [800.0, 500.0, 600.0]
    assert result["orchestrator_alone_per_s"] in (1600.0, 1000.0, 1200.0)
    assert result["offered_transitions_per_s"] == result["orchestrator_alone_per_s"] / 2


def test_an_orchestrator_that_made_no_transitions_stops_the_section_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def orchestrator_alone(*_: Any, rounds: int | None = None) -> dict[str, Any]:
        return {"transitions_per_s": None}

    monkeypatch.setattr(latency.orchestrator_run, "run", orchestrator_alone)
    config = BenchConfig(sections=("latency",))

    with pytest.raises(RuntimeError, match="no rate to offer"):
        asyncio.run(latency.run(None, config, None))  # type: ignore[arg-type]
