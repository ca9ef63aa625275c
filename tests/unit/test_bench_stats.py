"""sagaline bench: percentiles, crossings and rates from sampled counters."""

from __future__ import annotations

import pytest

from sagaline_tools.bench.stats import (
    Sample,
    crossing,
    latency_summary,
    median_round,
    percentile,
    ratio,
    span_rate,
    window_rate,
)


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 1.0), (50, 3.0), (100, 5.0), (25, 2.0), (90, 4.6), (99, 4.96)],
)
def test_percentile_interpolates_between_ranks_like_numpy(q: float, expected: float) -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], q) == pytest.approx(expected)


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-1, 101])
def test_percentile_rejects_q_outside_0_to_100(q: float) -> None:
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_latency_summary_has_percentiles_max_and_count() -> None:
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["max_ms"] == 100
    assert summary["mean_ms"] == pytest.approx(50.5)


def test_crossing_interpolates_between_samples() -> None:
    samples = [Sample(0.0, 0), Sample(1.0, 100), Sample(2.0, 300)]
    assert crossing(samples, 200) == pytest.approx(1.5)
    assert crossing(samples, 0) == 0.0
    assert crossing(samples, 301) is None


def test_crossing_on_a_flat_step_takes_the_sample_time() -> None:
    assert crossing([Sample(0.0, 5), Sample(1.0, 5), Sample(2.0, 9)], 5) == 0.0


def test_window_rate_ignores_a_slow_start_and_tail() -> None:
    # 10 s of start-up at zero, then 100/s steady, then a slow tail: the rate is the steady one.
    samples = [Sample(0.0, 0), Sample(10.0, 0)]
    samples += [Sample(10.0 + t, 100 * t) for t in range(1, 10)]
    samples += [Sample(30.0, 1000)]
    assert window_rate(samples, 1000) == pytest.approx(100.0)


def test_window_rate_is_none_when_the_window_is_not_reached() -> None:
    assert window_rate([Sample(0.0, 0), Sample(1.0, 50)], 1000) is None


def test_window_rate_checks_its_bounds() -> None:
    with pytest.raises(ValueError, match="need total"):
        window_rate([], 0)
    with pytest.raises(ValueError, match="need total"):
        window_rate([], 10, low=0.9, high=0.1)


def test_span_rate_counts_intervals_between_events() -> None:
    assert span_rate(11, 100.0, 110.0) == pytest.approx(1.0)
    assert span_rate(1, 0.0, 1.0) is None
    assert span_rate(5, 2.0, 2.0) is None


def test_ratio_needs_both_sides() -> None:
    assert ratio(80.0, 100.0) == pytest.approx(0.8)
    assert ratio(None, 100.0) is None
    assert ratio(80.0, None) is None
    assert ratio(80.0, 0.0) is None


def test_median_round_keeps_the_middle_round_and_lists_all() -> None:
    rounds = [{"rate": 3.0, "n": "c"}, {"rate": 1.0, "n": "a"}, {"rate": 2.0, "n": "b"}]
    chosen = median_round(rounds, "rate")
    assert chosen["n"] == "b"
    assert chosen["rounds"] == [3.0, 1.0, 2.0]
    assert median_round(rounds[:2], "rate")["n"] == "a"  # the lower middle of two
    assert median_round(rounds[:1], "rate")["rounds"] == [3.0]
