"""sagaline bench: figures, ratios, goal checks, the table and the JSON document."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from sagaline_tools.bench.report import (
    ERROR,
    FAIL,
    NO_GOAL,
    NOT_RUN,
    PASS,
    SCHEMA,
    busy_sections,
    document,
    figures,
    format_value,
    overall,
    projected_timer_seconds,
    status_text,
    table,
)

MACHINE = {"cores": 2, "memory_gib": 23.5, "cpu_model": "AMD EPYC", "python": "3.11.7",
           "rabbitmq": "3.10.8", "postgresql": "15.20"}  # fmt: skip


def results(**changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    value: dict[str, dict[str, Any]] = {
        "baseline": {"msgs_per_s": 3000.0, "messages": 20_000, "body_bytes": 200, "batch": 64,
                     "max_wait_ms": 5.0, "two_hop_msgs_per_s": 1800.0,
                     "cpu_cores": {"relay1": 0.9, "rabbitmq": 0.8}},
        "minimal": {"transitions_per_s": 5000.0, "orders": 3000, "transitions": 12_000,
                    "seconds": 3.0, "cpu_cores": {"minimal": 0.5, "postgresql": 0.2},
                    "wal_per_transition": {"wal_bytes": 1536.0, "wal_fpi": 0.0}},
        "orchestrator": {"transitions_per_s": 2700.0, "orders": 3000,
                         "cpu_cores": {"orchestrator": 0.95, "machine": 1.9}},
        "e2e": {"sagas_per_s": 300.0, "orders": 2000, "growth": [
            {"orders": 2000, "sagas_per_s": 300.0},
            {"orders": 10_000, "sagas_per_s": 290.0},
            {"orders": 30_000, "sagas_per_s": 280.0,
             "cpu_ms_per_saga": {"orchestrator": 1.8, "postgresql": 0.7, "rabbitmq": 1.5,
                                 "payments": 0.5, "inventory": 0.6, "shipping": 0.4,
                                 "machine": 6.0},
             "planner": {"autovacuum": "off", "tables": 9, "analyzed": {}},
             "snapshot_guesses": {"batches": 4000, "held": 1640, "missed": 8,
                                  "share_held": 0.41}},
        ]},
        "latency": {"p50_ms": 9.0, "p95_ms": 20.0, "p99_ms": 40.0, "count": 900,
                    "offered_transitions_per_s": 1350.0, "p99_ratio": 2.0,
                    "achieved_transitions_per_s": 1000.0,
                    "cpu_cores": {"orchestrator": 0.8, "machine": 1.5},
                    "batching": {"batches": 2000, "per_s": 100.0, "mean_size": 10.0},
                    "stages_p50_ms": {"wait": 4.0, "transaction": 3.0},
                    "stages_tail_ms": {"wait": 9.0, "transaction": 25.0},
                    "transaction_parts_p50_ms": {"begin": 0.5, "write": 2.5},
                    "transaction_parts_tail_ms": {"begin": 5.0, "write": 20.0},
                    "relay": {"p50_ms": 7.0, "p95_ms": 15.0, "p99_ms": 20.0, "messages": 40_000,
                              "offered_msgs_per_s": 1350.0, "loop": "1 in 4 paced",
                              "cpu_cores": {"relay": 0.4},
                              "stages_p50_ms": {"wait": 5.0, "confirm": 2.0},
                              "stages_tail_ms": {"wait": 10.0, "confirm": 9.0}}},
        "scale": {"transitions_per_s": 2500.0, "orders": 3000, "finished": 1_000_000,
                  "live": 100_000, "database_size": "5 GB"},
        "timers": {"timers": 100_000, "seconds": 50.0, "ready_seconds": 3.0,
                   "timers_per_s": 2100.0, "fired_once": True, "sagas_fired": 100_000,
                   "fired_more_than_once": 0, "due_timers_left": 0},
    }  # fmt: skip
    for key, update in changes.items():
        value[key] = {**value[key], **update}
    return value


def by_key(figs: list[Any]) -> dict[str, Any]:
    return {f.key: f for f in figs}


def test_all_goals_met() -> None:
    figs = by_key(figures(results()))
    assert figs["baseline_msgs_per_s"].status == NO_GOAL
    minimal = figs["minimal_transitions_per_s"]
    assert minimal.status == NO_GOAL
    assert minimal.ratio == pytest.approx(5000 / 3000)
    # 0.5 cores x 3 s / 12,000 transitions = 0.125 ms
    assert "per transition: minimal 0.12 ms, pg 0.05 ms CPU; WAL 1.5 kB" in minimal.note
    orch = figs["orchestrator_transitions_per_s"]
    assert orch.ratio == pytest.approx(2700 / 5000)
    assert orch.ratio_to == "minimal step"
    assert orch.status == PASS
    assert "orch 0.95" in orch.note
    assert "0.90x baseline, 1.50x two relays" in orch.note
    two = figs["two_hop_msgs_per_s"]
    assert two.ratio == pytest.approx(0.6)
    assert two.status == NO_GOAL
    assert "relay1 0.90 mq 0.80" in figs["baseline_msgs_per_s"].note
    assert figs["e2e_sagas_per_s"].status == PASS
    assert "0.70x baseline" in figs["e2e_sagas_per_s"].note  # 300 sagas/s * 7 hops / 3000
    middle, last = figs["e2e_growth_1_sagas_per_s"], figs["e2e_growth_2_sagas_per_s"]
    assert (middle.status, middle.ratio) == (NO_GOAL, pytest.approx(290 / 300))
    assert (last.status, last.ratio, last.ratio_to) == (
        PASS,
        pytest.approx(280 / 300),
        "2,000 orders",
    )
    assert last.label == "End to end, 30,000 orders"
    assert last.note == (
        "per saga: orch 1.80, pg 0.70, mq 1.50, workers 1.50 ms CPU; no table analyzed "
        "(autovacuum off); batches decided from the snapshot cache: 41% (8 guesses missed)"
    )
    assert "snapshot cache" not in middle.note  # not scraped: nothing said
    assert figs["latency_p50_ms"].status == NO_GOAL
    assert "stages p50: wait 4.0, transaction 3.0" in figs["latency_p50_ms"].note
    p99 = figs["latency_p99_ms"]
    assert p99.status == PASS
    assert p99.ratio == 2.0
    assert p99.ratio_to == "relay p99"
    assert "slowest 1%: wait 9.0, transaction 25.0; their transaction: begin 5.0, write 20.0" in (
        p99.note
    )
    assert "transaction p50: begin 0.5, write 2.5" in figs["latency_p50_ms"].note
    relay = figs["latency_relay_p99_ms"]
    assert relay.value == 20.0
    assert "40,000 msgs copied at 1,350 arrivals/s; p50 7.0, p95 15.0 ms; loop: 1 in 4 paced" in (
        relay.note
    )
    scale = figs["scale_transitions_per_s"]
    assert scale.ratio == pytest.approx(2500 / 2700)
    assert scale.status == PASS
    assert scale.label == "Orchestrator, 1M finished + 100k live"
    assert figs["timers_all_fired_seconds"].status == PASS
    assert overall(list(figs.values()))["goals_met"]


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"orchestrator": {"transitions_per_s": 2400.0}}, "orchestrator_transitions_per_s"),
        ({"e2e": {"sagas_per_s": 249.0}}, "e2e_sagas_per_s"),
        (
            {
                "e2e": {
                    "growth": [
                        {"orders": 2000, "sagas_per_s": 300.0},
                        {"orders": 30_000, "sagas_per_s": 269.0},
                    ]
                }
            },
            "e2e_growth_1_sagas_per_s",
        ),
        ({"latency": {"p99_ratio": 3.1}}, "latency_p99_ms"),
        ({"scale": {"transitions_per_s": 2400.0}}, "scale_transitions_per_s"),
        ({"timers": {"seconds": 61.0}}, "timers_all_fired_seconds"),
        ({"timers": {"fired_once": False, "fired_more_than_once": 3}}, "timers_all_fired_seconds"),
    ],
)
def test_each_goal_can_fail(changes: dict[str, dict[str, Any]], key: str) -> None:
    figs = figures(results(**changes))
    assert by_key(figs)[key].status == FAIL
    summary = overall(figs)
    assert not summary["goals_met"]
    assert summary["failed"] == 1


def test_repeated_latency_rounds_are_listed_beside_the_median_one() -> None:
    once = by_key(figures(results()))["latency_p99_ms"].note
    assert "rounds" not in once
    repeated = results(latency={"p99_ratio": 2.9, "rounds": [3.4, 2.8, 2.9]})
    p99 = by_key(figures(repeated))["latency_p99_ms"]
    assert p99.status == PASS
    assert "median of 3 rounds, ratios 3.40, 2.80, 2.90" in p99.note


def test_the_offered_rate_is_shown_as_a_fraction_of_the_orchestrator_alone_just_before() -> None:
    measured = results(latency={"orchestrator_alone_per_s": 2700.0})  # offered 1,350
    p50 = by_key(figures(measured))["latency_p50_ms"].note
    assert "at 1,350 transitions/s (0.50 of the orchestrator alone's 2,700 just before)" in p50
    fixed = by_key(figures(results()))["latency_p50_ms"].note  # --latency-rate, or an old run
    assert "orchestrator alone" not in fixed
    repeated = results(
        latency={"p99_ratio": 2.9, "rounds": [3.4, 2.8], "rounds_offered_per_s": [1350.0, 990.0]}
    )
    p99 = by_key(figures(repeated))["latency_p99_ms"].note
    assert "median of 2 rounds, ratios 3.40, 2.80 at 1,350, 990 transitions/s" in p99


def test_pooled_rounds_are_shown_beside_the_verdict_they_do_not_change() -> None:
    pooled = {"p99_ms": 75.0, "relay_p99_ms": 20.0, "p99_ratio": 3.75}
    repeated = results(latency={"p99_ratio": 2.9, "rounds": [3.4, 2.8, 2.9], "pooled": pooled})
    p99 = by_key(figures(repeated))["latency_p99_ms"]
    assert p99.status == PASS  # the verdict stays the median round's
    assert "pooled rounds: p99 75.0 ms against the relay's 20.0 = 3.75x" in p99.note


def test_each_rounds_stolen_cores_are_shown_so_a_disturbed_round_can_be_told_apart() -> None:
    latency = {"p99_ratio": 2.9, "rounds": [3.4, 22.1, 2.9],
               "rounds_steal": [[0.0, 0.01], [0.0, 0.46], [None, 0.02]]}  # fmt: skip
    p99 = by_key(figures(results(latency=latency)))["latency_p99_ms"]
    assert p99.status == PASS  # shown beside the verdict, which stays the median round's
    shown = "stolen by the hypervisor per round (relay/orchestrator): 0.00/0.01, 0.00/0.46, ?/0.02"
    assert shown in p99.note
    unknown = results(
        latency={"p99_ratio": 2.9, "rounds": [3.4, 2.9], "rounds_steal": [[None, None]] * 2}
    )
    assert "stolen" not in by_key(figures(unknown))["latency_p99_ms"].note


def test_where_the_slowest_percent_arrived_tells_a_stall_from_queueing() -> None:
    stall = {"seconds": 2, "of_seconds": 30, "busiest_share": 0.9}
    spread = {"seconds": 24, "of_seconds": 30, "busiest_share": 0.07}
    relay = {**results()["latency"]["relay"], "tail_spread": spread}
    latency = {"tail_spread": stall, "relay": relay, "p99_ratio": 2.9, "rounds": [7.1, 2.9],
               "rounds_tail_spread": [[spread, stall], [None, spread]]}  # fmt: skip
    p99 = by_key(figures(results(latency=latency)))["latency_p99_ms"].note
    assert "slowest 1% arrived in 2 of the round's 30 s (90% in the busiest second)" in p99
    assert "the relay's in 24 of 30 s (7%)" in p99
    per_round = "busiest one's share, per round (relay/orchestrator): 24 s 7%/2 s 90%, ?/24 s 7%"
    assert per_round in p99
    assert "slowest 1% arrived" not in by_key(figures(results()))["latency_p99_ms"].note


def test_a_timer_that_did_not_fire_exactly_once_is_spelled_out() -> None:
    changes = {"timers": {"fired_once": False, "fired_more_than_once": 3, "due_timers_left": 2}}
    note = by_key(figures(results(**changes)))["timers_all_fired_seconds"].note
    assert "NOT each fired once" in note
    assert "3 more than once, 2 left" in note


def test_missing_sections_are_not_run_or_errors() -> None:
    value = results()
    del value["baseline"]
    del value["minimal"]
    del value["latency"]
    figs = by_key(figures(value, {"latency": "Stalled: transitions stuck"}))
    assert figs["baseline_msgs_per_s"].status == NOT_RUN
    assert figs["two_hop_msgs_per_s"].status == NOT_RUN
    assert figs["minimal_transitions_per_s"].status == NOT_RUN
    orch = figs["orchestrator_transitions_per_s"]
    assert orch.ratio is None
    assert orch.status == NO_GOAL
    assert "no minimal step" in orch.note
    assert figs["latency_p99_ms"].status == ERROR
    assert figs["latency_p99_ms"].note == "Stalled: transitions stuck"
    assert figs["latency_relay_p99_ms"].status == ERROR
    assert overall(list(figs.values()))["errors"] == 4  # relay, p50, p95, p99


def test_below_goal_size_is_flagged_and_timers_are_projected() -> None:
    small = results(
        scale={"finished": 200_000, "live": 20_000},
        timers={"timers": 20_000, "seconds": 13.0, "ready_seconds": 3.0},
    )
    figs = by_key(figures(small))
    scale = figs["scale_transitions_per_s"]
    assert not scale.at_goal_size
    assert status_text(scale) == "pass*"
    assert "goal is for 1M + 100k" in scale.note
    timer = figs["timers_all_fired_seconds"]
    assert not timer.at_goal_size
    # 3 s start-up + 10 s firing per 20k -> 3 + 50 = 53 s for 100k: within the goal.
    assert projected_timer_seconds(small["timers"]) == pytest.approx(53.0)
    assert timer.status == PASS
    assert "projected to 100k: 53 s" in timer.note
    summary = overall(list(figs.values()))
    assert summary["below_goal_size"] == ["scale_transitions_per_s", "timers_all_fired_seconds"]


def test_projected_timers_can_fail() -> None:
    small = results(timers={"timers": 10_000, "seconds": 10.0, "ready_seconds": 2.0})
    assert by_key(figures(small))["timers_all_fired_seconds"].status == FAIL  # 2 + 80 s


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (3241.7, "3,242"), (42.25, "42.2"), (4.567, "4.57"), (100.0, "100")],
)
def test_format_value(value: float | None, text: str) -> None:
    assert format_value(value) == text


def test_table_has_one_row_per_figure_and_the_machine_line() -> None:
    figs = figures(results())
    console = Console(width=250, record=True)
    console.print(table(figs, MACHINE))
    text = console.export_text()
    for figure in figs:
        assert figure.label in text
    assert "0.54x minimal step" in text
    assert "2 cores · 23.5 GiB · AMD EPYC · Python 3.11.7 · RabbitMQ 3.10.8" in text


def test_document_is_json_with_the_same_figures() -> None:
    figs = figures(results())
    doc = document(
        figs=figs,
        results=results(),
        errors={},
        machine=MACHINE,
        config={"sizes": {"orders": 3000}},
        command=["sagaline", "bench"],
        started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T00:10:00+00:00",
    )
    parsed = json.loads(json.dumps(doc))
    assert parsed["schema"] == SCHEMA
    assert [f["key"] for f in parsed["figures"]] == [f.key for f in figs]
    assert set(parsed["figures"][0]) >= {"key", "label", "value", "unit", "ratio", "goal",
                                          "status", "at_goal_size", "note"}  # fmt: skip
    assert parsed["summary"]["goals_met"] is True
    assert parsed["machine"]["cores"] == 2
    assert set(parsed["results"]) == set(results())


def test_measurements_on_a_busy_machine_are_flagged() -> None:
    value = results(orchestrator={"cpu_cores": {"orchestrator": 0.4, "other": 1.2}})
    value["baseline"]["two_hop_cpu_cores"] = {"other": 0.7}
    assert busy_sections(value) == {"orchestrator": 1.2, "baseline": 0.7}
    assert busy_sections(results()) == {}


def test_the_seeded_rate_is_compared_with_the_empty_tables_measured_right_after_it() -> None:
    # The machine slowed down between the orchestrator section (2,700) and the scale section:
    # against its neighbour (2,600) the seeded run holds 0.96x, against the old figure 0.89x.
    beside = {"transitions_per_s": 2600.0, "rounds": [2600.0]}
    figs = by_key(figures(results(scale={"transitions_per_s": 2400.0, "empty_beside": beside})))
    scale = figs["scale_transitions_per_s"]
    assert scale.ratio == pytest.approx(2400 / 2600)
    assert scale.status == PASS
    assert "empty tables right after: 2,600 transitions/s (orchestrator section: 2,700)" in (
        scale.note
    )
    slower = {"transitions_per_s": 2800.0, "rounds": [2800.0]}
    figs = by_key(figures(results(scale={"transitions_per_s": 2500.0, "empty_beside": slower})))
    assert figs["scale_transitions_per_s"].status == FAIL


def test_the_latency_notes_give_cpu_per_transition_per_batch_and_per_relayed_message() -> None:
    figs = by_key(figures(results()))
    # 0.8 cores at 1,000 transitions/s in 100 batches/s; the relay 0.4 cores at 1,350/s.
    assert (
        "batches: 100.0/s of 10.00 deliveries; orch CPU 0.80 ms per transition, 8.00 ms per batch"
        in figs["latency_p50_ms"].note
    )
    assert "relay CPU 0.30 ms per arrival" in figs["latency_relay_p99_ms"].note
    older = results(latency={"batching": None, "cpu_cores": {}})
    older["latency"]["relay"] = {**older["latency"]["relay"], "cpu_cores": {}}
    figs = by_key(figures(older))
    assert "batches" not in figs["latency_p50_ms"].note
    assert "relay CPU" not in figs["latency_relay_p99_ms"].note
