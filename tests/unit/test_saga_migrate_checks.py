"""The checks `saga migrate` makes on each saga (pure): what keeps a saga's meaning under the
target version, and the reason given when something does not."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from orchestrator.engine.model import CompensationEntry, RuntimeState
from orchestrator.engine.registry import Workflows
from orchestrator.migration_checks import (
    InvalidMigration,
    SagaFacts,
    Verdict,
    judge,
    new_report,
    plan_request,
)
from orchestrator.workflows import order
from orchestrator.workflows.order import OrderData
from tests import order_v2

REFUND = CompensationEntry("RefundPayment", {"order_id": "o-1"}, "PaymentRefunded")
DATA = {"order_id": "o-1", "ship_to": {"country": "DE", "postcode": "1", "city": "B"}}


def saga(
    state: str,
    *,
    version: int = 1,
    awaited: tuple[str | None, ...] = (),
    timers: tuple[str, ...] = (),
    stack: tuple[CompensationEntry, ...] = (),
    compensating_to: str | None = None,
    data: dict[str, Any] | None = None,
) -> SagaFacts:
    return SagaFacts(
        saga_id=uuid.uuid4(),
        state=state,
        definition_version=version,
        data=DATA if data is None else data,
        runtime=RuntimeState(
            outstanding=frozenset(uuid.uuid4() for _ in awaited),
            compensations=stack,
            compensation_target=compensating_to,
        ),
        timers=timers,
        awaited=awaited,
    )


def verdict(facts: SagaFacts, *maps: str, workflows: Workflows = order_v2.WORKFLOWS,
            to: int = 2) -> Verdict:  # fmt: skip
    return judge(plan_request(workflows, "order", to, maps), facts)


def test_a_waiting_saga_moves_by_the_versions_own_mapping() -> None:
    reserving = saga("awaiting_inventory", awaited=("ReserveInventory",),
                     timers=("step-timeout",), stack=(REFUND,))  # fmt: skip
    assert verdict(reserving) == Verdict("migrate", "reserving_stock")
    paying = saga("awaiting_payment", awaited=("ProcessPayment",), timers=("step-timeout",))
    assert verdict(paying) == Verdict("migrate", "awaiting_payment")


def test_a_compensating_saga_keeps_compensating() -> None:
    facts = saga("compensating", awaited=("RefundPayment",), stack=(REFUND,),
                 timers=("compensation-step",), compensating_to="failed")  # fmt: skip
    assert verdict(facts) == Verdict("migrate", "compensating")
    assert verdict(facts, "compensating=packing").reasons == (
        "compensating, but compensating would continue in packing, which is not v2's "
        "compensating state compensating",
    )


def test_a_state_without_counterpart_needs_a_mapping() -> None:
    packing = saga("packing", version=2, timers=("packing",))
    assert verdict(packing, workflows=order_v2.WORKFLOWS, to=1).reasons == (
        "state packing of v2 has no counterpart in v1 (say where it continues: "
        "--map packing=STATE)",
    )
    # Back to version 1 with a mapping: the packing timer means nothing there.
    back = verdict(packing, "packing=awaiting_shipment", to=1)
    assert back.reasons == (
        "its timer packing would change nothing in awaiting_shipment under v1 (cancel it first: "
        "sagaline timers cancel)",
    )


def test_nothing_left_to_move_it_is_refused() -> None:
    # Packing without its timer would wait for ever.
    stuck = verdict(saga("awaiting_inventory"), "awaiting_inventory=packing")
    assert stuck.reasons == (
        "nothing would move it on in packing under v2: it awaits no reply and has no timer that "
        "state acts on",
    )
    timed = verdict(saga("awaiting_inventory", timers=("packing",)), "awaiting_inventory=packing")
    assert timed == Verdict("migrate", "packing")


def test_final_states_and_the_compensating_state_are_not_destinations() -> None:
    assert verdict(saga("awaiting_payment"), "awaiting_payment=completed").reasons == (
        "awaiting_payment would continue in completed, a final state of v2",
    )
    assert verdict(saga("awaiting_payment"), "awaiting_payment=compensating").reasons == (
        "awaiting_payment would continue in v2's compensating state without compensating",
    )


def test_an_awaited_command_whose_replies_the_target_ignores_or_whose_row_is_gone() -> None:
    assert verdict(saga("awaiting_shipment", awaited=("ProcessPayment",))).reasons == (
        "it awaits ProcessPayment, but awaiting_shipment in v2 does not act on "
        "PaymentProcessed, PaymentFailed",
    )
    assert verdict(saga("awaiting_payment", awaited=(None,), timers=("step-timeout",))).reasons == (
        "it awaits a command whose outbox row is gone: its replies are unknown",
    )


def test_compensations_and_data_must_mean_the_same_under_the_target() -> None:
    other = order_v2.build()
    other.compensations["RefundPayment"] = "PaymentFailed"
    other.compensation_targets.remove(order_v2.S.CANCELLED)

    class StricterData(OrderData):
        warehouse: str

    other.data_model = StricterData
    workflows = Workflows.of(order.machine, other)
    facts = saga("compensating", awaited=("RefundPayment",), stack=(REFUND,),
                 compensating_to="cancelled")  # fmt: skip

    assert verdict(facts, workflows=workflows).reasons == (
        "its data does not fit v2's model (warehouse: missing)",
        "its compensation RefundPayment (confirmed by PaymentRefunded) is not registered in v2",
        "it compensates towards cancelled, not a compensation target of v2",
    )


def test_the_operators_mapping_wins_and_mappings_chain_over_versions() -> None:
    v3 = order_v2.build()
    v3.version = 3
    v3.from_previous = {}
    workflows = Workflows.of(order.machine, order_v2.machine, v3)
    facts = saga("awaiting_inventory", awaited=("ReserveInventory",), timers=("step-timeout",))

    # v1 -> v2 renames, v3 keeps: the chain gives reserving_stock.
    assert verdict(facts, workflows=workflows, to=3).to_state == "reserving_stock"


def test_the_report_counts_per_version_and_outcome_with_examples() -> None:
    request = plan_request(order_v2.WORKFLOWS, "order", 2)
    report = new_report(request)
    sagas = [saga("awaiting_payment", awaited=("ProcessPayment",), timers=("step-timeout",))]
    sagas += [saga("awaiting_shipment", awaited=("ProcessPayment",)) for _ in range(4)]
    for facts in sagas:
        report.count(facts, judge(request, facts))

    body = report.as_dict()
    assert body["by_version"] == {"1": {"sagas": 5, "migrate": 1, "blocked": 4}}
    (blocked,) = body["blocked"]
    assert (blocked["sagas"], len(blocked["examples"])) == (4, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", 2, ()), "unknown workflow 'nope'"),
        (("order", 3, ()), "order has no version 3 loaded (v1, v2)"),
        (("order", 2, ("a=b=c",)), "'a' is no state of any loaded version"),
        (("order", 2, ("awaiting_payment=packing", "awaiting_payment=reserving_stock")),
         "'awaiting_payment' is mapped twice"),
    ],
)  # fmt: skip
def test_requests_naming_unknown_things_are_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidMigration, match=re.escape(message)):
        plan_request(order_v2.WORKFLOWS, *args)
