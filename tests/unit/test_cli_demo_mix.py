"""The sample orders of `sagaline demo order` and the final state each must reach."""

from __future__ import annotations

from collections import Counter

import pytest

from contracts.order import OrderCancellationRequested, OrderSubmitted
from sagaline_tools.cli.demo_mix import (
    DECLINED_CARD,
    FINAL_STATES,
    MIX,
    UNSUPPORTED_COUNTRY,
    Scenario,
    build_orders,
    skus,
)


def test_five_orders_cover_every_outcome_once() -> None:
    plan = build_orders(5, "t1")
    assert [o.scenario for o in plan.orders] == list(MIX)
    assert {o.scenario: o.expected_state for o in plan.orders} == {
        Scenario.SUCCESS: "completed",
        Scenario.PAYMENT_DECLINED: "failed",
        Scenario.OUT_OF_STOCK: "failed",
        Scenario.UNSUPPORTED_DESTINATION: "failed",
        Scenario.CANCELLED: "cancelled",
    }


def test_every_expected_state_is_final() -> None:
    for order in build_orders(5, "t1").orders:
        assert order.expected_state in FINAL_STATES


def test_the_mix_cycles_for_larger_counts() -> None:
    plan = build_orders(23, "t1")
    counts = Counter(o.scenario for o in plan.orders)
    assert counts[Scenario.SUCCESS] == 5
    assert counts[Scenario.CANCELLED] == 4
    assert sum(counts.values()) == 23


def test_each_scenario_sets_off_its_business_rule() -> None:
    in_stock, sold_out = skus("t1")
    by_scenario = {o.scenario: o for o in build_orders(5, "t1").orders}

    success = by_scenario[Scenario.SUCCESS].submitted
    assert success.card_token != DECLINED_CARD
    assert success.ship_to.country != UNSUPPORTED_COUNTRY
    assert {line.sku for line in success.lines} == {in_stock}

    assert by_scenario[Scenario.PAYMENT_DECLINED].submitted.card_token == DECLINED_CARD
    assert {line.sku for line in by_scenario[Scenario.OUT_OF_STOCK].submitted.lines} == {sold_out}
    assert (
        by_scenario[Scenario.UNSUPPORTED_DESTINATION].submitted.ship_to.country
        == UNSUPPORTED_COUNTRY
    )


def test_cancellation_is_published_before_the_submission() -> None:
    for order in build_orders(10, "t1").orders:
        if order.scenario is Scenario.CANCELLED:
            first, second = order.events
            assert isinstance(first, OrderCancellationRequested)
            assert isinstance(second, OrderSubmitted)
            assert first.order_id == second.order_id
        else:
            assert order.events == (order.submitted,)


def test_stock_covers_every_order_that_may_reserve() -> None:
    plan = build_orders(50, "t1")
    in_stock, sold_out = skus("t1")
    assert plan.stock[sold_out] == 0
    reserving = [o for o in plan.orders if o.scenario is not Scenario.OUT_OF_STOCK]
    assert plan.stock[in_stock] == sum(
        line.quantity for o in reserving for line in o.submitted.lines
    )


def test_ids_are_unique_and_deterministic_per_run() -> None:
    first = build_orders(20, "run-a")
    again = build_orders(20, "run-a")
    other = build_orders(20, "run-b")
    assert [o.saga_id for o in first.orders] == [o.saga_id for o in again.orders]
    assert len({o.saga_id for o in first.orders}) == 20
    assert len({o.order_id for o in first.orders}) == 20
    assert not {o.saga_id for o in first.orders} & {o.saga_id for o in other.orders}
    assert not set(first.stock) & set(other.stock)  # each run has SKUs of its own


def test_amounts_stay_under_the_default_payment_limit() -> None:
    assert max(o.submitted.amount_cents for o in build_orders(30, "t1").orders) <= 500_000


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build_orders(0, "t1")


def test_demo_values_trigger_the_workers_rules() -> None:
    # The demo predicts outcomes from the workers' rules: keep both in step.
    from consumers.payments.rules import DECLINED_CARD_TOKEN
    from consumers.shipping.rules import SUPPORTED_COUNTRIES

    assert DECLINED_CARD == DECLINED_CARD_TOKEN
    assert UNSUPPORTED_COUNTRY not in SUPPORTED_COUNTRIES
    success = build_orders(1, "t1").orders[0].submitted
    assert success.ship_to.country in SUPPORTED_COUNTRIES
    assert success.card_token != DECLINED_CARD_TOKEN


def test_final_states_match_the_order_workflow() -> None:
    from orchestrator.workflows.order import machine

    assert set(machine.final) == FINAL_STATES


def test_progress_summary() -> None:
    from sagaline_tools.cli.demo import Progress

    plan = build_orders(5, "t1")
    progress = Progress(plan, timeout=10.0)
    first, second, *_ = plan.orders
    progress.states = {first.saga_id: "completed", second.saga_id: "completed"}
    progress.finished = {first.saga_id, second.saga_id}
    summary = progress.summary()
    assert not summary["ok"]
    assert summary["as_expected"] == 1  # the declined payment completed: not as expected
    assert summary["pending"] == 3
    assert not progress.done
    assert {entry["state"] for entry in summary["orders"][2:]} == {None}

    progress.states = {o.saga_id: o.expected_state for o in plan.orders}
    progress.finished = set()  # states alone are enough to be final
    assert progress.done
    assert progress.summary()["ok"]
