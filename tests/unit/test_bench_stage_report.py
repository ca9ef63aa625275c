"""sagaline bench: per-command latency and its stages from the orchestrator's stage lines."""

from __future__ import annotations

import json

import pytest

from sagaline_tools.bench.stage_report import (
    batching,
    orchestrator_stages,
    stage_text,
    summarize,
    tail_spread,
)


def batch(**changes: object) -> str:
    value: dict[str, object] = {
        "received": [0.990, 0.995, 0.999],
        "collected": 1.000,
        "parsed": 1.001,
        "tx_connected": 1.0015,
        "tx_loaded": 1.004,
        "tx_planned": 1.006,
        "tx_written": 1.0105,
        "committed": 1.011,
        "acked": 1.012,
        "claimed": 1.014,
        "confirmed": 1.020,
        "caused": [True, False, True],
    }
    value.update(changes)
    return json.dumps(value)


def test_each_command_causing_delivery_gets_stages_that_add_up_to_its_latency() -> None:
    messages, parts, incomplete, arrivals = orchestrator_stages([batch(), ""])
    assert incomplete == 0
    assert arrivals == [0.990, 0.999]  # of the two that sent commands
    assert len(messages) == 2  # the second delivery sent no command
    first, third = messages
    assert first == pytest.approx(
        {"wait": 10, "parse": 1, "transaction": 10, "ack": 1, "claim": 2, "confirm": 6}
    )
    assert third["wait"] == pytest.approx(1)
    assert sum(first.values()) == pytest.approx((1.020 - 0.990) * 1000)
    assert parts[0] == pytest.approx(
        {"connect": 0.5, "read": 2.5, "plan": 2, "write": 4.5, "release": 0.5}
    )
    assert sum(parts[0].values()) == pytest.approx(first["transaction"])


def test_a_batch_without_the_transaction_marks_still_counts_without_parts() -> None:
    older = json.loads(batch())
    del older["tx_planned"]  # e.g. a stage log written before the transaction was split
    messages, parts, _, _ = orchestrator_stages([json.dumps(older)])
    assert len(messages) == 2
    assert parts == [{}, {}]
    summary = summarize(messages, parts)
    assert "transaction_parts_p50_ms" not in summary


def test_batches_without_commands_or_without_a_dispatch_are_left_out() -> None:
    no_commands = batch(caused=[False, False, False])
    fell_back = json.loads(batch())
    del fell_back["claimed"]
    messages, _, incomplete, _ = orchestrator_stages([no_commands, json.dumps(fell_back)])
    assert messages == []
    assert incomplete == 1


def test_the_summary_names_what_the_slowest_percent_is_made_of() -> None:
    fast = [{"wait": 5.0, "confirm": 2.0}] * 99
    slow = [{"wait": 5.0, "confirm": 50.0}]
    summary = summarize(fast + slow)
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(7.0)
    assert summary["stages_p50_ms"] == {"wait": 5.0, "confirm": 2.0}
    assert summary["stages_tail_ms"]["confirm"] > 2.0
    assert stage_text({"wait": 5.0, "confirm": 2.25}) == "wait 5.0, confirm 2.2"
    with pytest.raises(ValueError, match="no timed"):
        summarize([])


def test_the_summary_splits_the_slowest_transactions_into_their_parts() -> None:
    fast = [{"wait": 5.0, "transaction": 3.0}] * 99
    slow = [{"wait": 5.0, "transaction": 30.0}]
    quick_parts = [{"begin": 0.5, "write": 2.5}] * 99
    slow_parts = [{"begin": 2.0, "write": 28.0}]
    summary = summarize(fast + slow, quick_parts + slow_parts)
    assert summary["transaction_parts_p50_ms"] == {"begin": 0.5, "write": 2.5}
    assert summary["transaction_parts_tail_ms"] == {"begin": 2.0, "write": 28.0}


def test_batching_counts_every_batch_and_its_deliveries_per_second_of_the_log() -> None:
    lines = [
        batch(collected=1.0, received=[0.99]),
        "",
        batch(collected=1.5, received=[1.49, 1.495, 1.499], caused=[False, False, False]),
        batch(collected=3.0, received=[2.99, 2.995], caused=[True, True]),
    ]
    # Three batches collected over 2 s: two intervals, one per second; six deliveries.
    assert batching(lines) == {"batches": 3, "per_s": 1.0, "mean_size": 2.0}


def test_batching_needs_two_batches_apart_in_time() -> None:
    assert batching([]) is None
    assert batching([batch()]) is None
    assert batching([batch(), batch()]) is None


def test_a_stall_piles_the_slowest_percent_into_one_second_and_queueing_spreads_it() -> None:
    """Two rounds of 30 s at 100 messages/s, each with 30 slow messages (the slowest 1%)."""
    arrivals = [100.0 + i / 100 for i in range(3000)]
    stalled = [50.0 if 1200 <= i < 1230 else 8.0 for i in range(3000)]  # 0.3 s at 12 s
    queued = [50.0 if i % 100 == 7 else 8.0 for i in range(3000)]  # one in every second

    assert tail_spread(arrivals, stalled, 50.0) == {
        "seconds": 1, "of_seconds": 30, "busiest_share": 1.0,
    }  # fmt: skip
    assert tail_spread(arrivals, queued, 50.0) == {
        "seconds": 30, "of_seconds": 30, "busiest_share": 0.03,
    }  # fmt: skip
    messages = [{"wait": 1.0, "confirm": total - 1.0} for total in stalled]
    assert summarize(messages, arrivals=arrivals)["tail_spread"]["seconds"] == 1
    assert "tail_spread" not in summarize(messages)  # the relay of an older run: no arrivals
