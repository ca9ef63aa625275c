"""sagaline bench: sections, size presets and option validation."""

from __future__ import annotations

import pytest

from sagaline_tools.bench.config import (
    FULL,
    QUICK,
    SECTIONS,
    BenchConfig,
    ConfigError,
    Sizes,
    parse_counts,
    parse_database_settings,
    parse_env,
    parse_only,
    validate,
)


def test_no_only_means_every_section_in_run_order() -> None:
    assert parse_only(None) == SECTIONS
    assert parse_only(" ") == SECTIONS


def test_only_keeps_run_order_whatever_the_order_given() -> None:
    assert parse_only("timers, baseline") == ("baseline", "timers")


def test_scale_runs_alone_it_measures_its_own_reference() -> None:
    assert parse_only("scale") == ("scale",)


def test_unknown_sections_are_named() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        parse_only("baseline,bogus")


def test_env_pairs() -> None:
    assert parse_env(["SAGALINE_PREFETCH=64", "A_B="]) == (("SAGALINE_PREFETCH", "64"), ("A_B", ""))
    for bad in ("NOEQUALS", "=1", "BAD KEY=1"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_env([bad])


def test_latency_runs_alone_it_measures_its_own_half_load() -> None:
    validate(BenchConfig(sections=("latency",)))
    validate(BenchConfig(sections=("latency",), latency_rate=300.0))
    validate(BenchConfig(sections=("orchestrator", "latency")))


def test_sizes_are_checked() -> None:
    with pytest.raises(ConfigError, match="orders"):
        validate(BenchConfig(sizes=Sizes(orders=0)))
    with pytest.raises(ConfigError, match="negative"):
        validate(BenchConfig(sizes=Sizes(live=-1)))
    with pytest.raises(ConfigError, match="latency"):
        validate(BenchConfig(sizes=Sizes(latency_seconds=0)))


def test_repeat_is_at_least_one() -> None:
    with pytest.raises(ConfigError, match="repeat"):
        validate(BenchConfig(repeat=0))


def test_presets_are_valid_and_ordered_by_size() -> None:
    for sizes in (QUICK, Sizes(), FULL):
        validate(BenchConfig(sizes=sizes))
    assert QUICK.orders < Sizes().orders <= FULL.orders
    assert (FULL.finished, FULL.live, FULL.timers) == (1_000_000, 100_000, 100_000)


def test_with_sizes_changes_only_the_named_sizes() -> None:
    config = BenchConfig().with_sizes(orders=7)
    assert config.sizes.orders == 7
    assert config.sizes.messages == Sizes().messages


def test_e2e_sizes_are_a_comma_separated_series() -> None:
    assert parse_counts("2000, 10_000,30000") == (2000, 10_000, 30_000)
    for bad in ("", "2k", "0,100", ","):
        with pytest.raises(ConfigError):
            parse_counts(bad)
    with pytest.raises(ConfigError, match="e2e-orders"):
        validate(BenchConfig(sizes=Sizes(e2e_orders=())))


def test_database_settings_are_name_value_pairs() -> None:
    assert parse_database_settings(["plan_cache_mode=force_custom_plan", "x.y=1"]) == (
        ("plan_cache_mode", "force_custom_plan"),
        ("x.y", "1"),
    )
    for bad in ("novalue", "=1", "bad name=1", "a;drop=1"):
        with pytest.raises(ConfigError, match="name=value"):
            parse_database_settings([bad])


def test_orders_carry_version_7_ids_unless_random_ids_are_asked_for() -> None:
    from sagaline_tools.bench.workload import order_envelope

    advised = order_envelope("run1", 7)
    assert (advised.correlation_id.version, advised.message_id.version) == (7, 7)
    ignored = order_envelope("run1", 7, random_ids=True)
    assert (ignored.correlation_id.version, ignored.message_id.version) == (4, 4)
    assert ignored.payload == advised.payload  # the same order either way
