"""The workflow DSL: validation of toy definitions, and introspection of the order machine."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import pytest

from contracts import order as msg
from orchestrator.engine import DefinitionError, Machine, Timer
from orchestrator.workflows import machine_for
from orchestrator.workflows.order import OrderState as S
from orchestrator.workflows.order import machine as order_machine
from tests.unit.decider_support import Toy, ToyData, ToyDone, ToyPoked, ToyStarted, ToyWork, toy


class ToyWithOrphan(StrEnum):
    WORKING = "working"
    COMPENSATING = "compensating"
    DONE = "done"
    FAILED = "failed"
    BROKEN = "broken"
    ABORTED = "aborted"
    ORPHAN = "orphan"


class Elsewhere(StrEnum):
    NOWHERE = "nowhere"


def problems(machine: Machine[Any, ToyData]) -> str:
    with pytest.raises(DefinitionError) as caught:
        machine.validate()
    return str(caught.value)


# --- validation --------------------------------------------------------------------------------


def test_toy_machine_is_valid() -> None:
    toy().validate()


def test_order_machine_is_valid() -> None:
    order_machine.validate()


def test_unhandled_pair_is_reported() -> None:
    report = problems(toy(ignore_duplicate_start=False))
    assert "(working, ToyStarted) is neither handled nor ignored" in report


def test_trigger_handled_in_one_state_must_be_decided_in_every_active_state() -> None:
    machine = toy()
    machine.on(Toy.DONE, ToyPoked, to=Toy.DONE)
    report = problems(machine)
    assert "(working, ToyPoked) is neither handled nor ignored" in report


def test_unknown_target_state_is_reported() -> None:
    machine = toy()
    machine.on(Toy.WORKING, ToyPoked, to=Elsewhere.NOWHERE)
    assert "(working, ToyPoked) targets unknown state 'nowhere'" in problems(machine)


def test_unreachable_state_is_reported() -> None:
    assert "state orphan is unreachable" in problems(toy(ToyWithOrphan))


def test_final_state_with_a_transition_is_reported() -> None:
    machine = toy()
    machine.ignore(Toy.WORKING, ToyPoked, why="not interesting")
    machine.on(Toy.DONE, ToyPoked, to=Toy.WORKING)
    assert "final state done has a transition on ToyPoked" in problems(machine)


def test_timer_transition_out_of_final_state_is_reported() -> None:
    machine = toy()
    machine.on(Toy.WORKING, Timer("nag"), to=Toy.WORKING)
    machine.on(Toy.FAILED, Timer("nag"), to=Toy.WORKING)
    assert "final state failed has a transition on timer:nag" in problems(machine)


def test_missing_start_and_compensation_target_are_reported() -> None:
    machine: Machine[Toy, ToyData] = Machine(
        "empty",
        states=Toy,
        data=ToyData,
        final=[Toy.DONE],
        compensating=Toy.COMPENSATING,
        compensation_failed=Toy.BROKEN,
        aborted=Toy.ABORTED,
    )
    machine.compensation(msg.RefundPayment, confirmed_by=msg.PaymentRefunded)
    report = problems(machine)
    assert "no starting event" in report
    assert "compensation RefundPayment registered but no compensation target" in report


def test_every_problem_is_listed_at_once() -> None:
    machine = toy(ToyWithOrphan, ignore_duplicate_start=False)
    report = problems(machine)
    assert "neither handled nor ignored" in report
    assert "unreachable" in report


@pytest.mark.parametrize(
    "declare_again",
    [
        pytest.param(lambda m: m.on(Toy.WORKING, ToyDone, to=Toy.FAILED), id="on twice"),
        pytest.param(lambda m: m.ignore(Toy.WORKING, ToyDone, why="x"), id="on then ignore"),
        pytest.param(lambda m: m.on(Toy.WORKING, ToyStarted, to=Toy.DONE), id="ignore then on"),
        pytest.param(lambda m: m.ignore(Toy.WORKING, ToyStarted, why="x"), id="ignore twice"),
        pytest.param(
            lambda m: m.on([Toy.DONE, Toy.WORKING], ToyDone, to=Toy.DONE), id="in a state list"
        ),
    ],
)
def test_pair_declared_twice_is_refused(declare_again: Callable[[Machine[Any, Any]], None]) -> None:
    machine = toy()
    with pytest.raises(DefinitionError, match=r"\(working, Toy\w+\) declared twice"):
        declare_again(machine)


def test_timer_pair_declared_twice_is_refused() -> None:
    machine = toy()
    machine.on(Toy.WORKING, Timer("nag"), to=Toy.WORKING)
    with pytest.raises(DefinitionError, match="declared twice"):
        machine.ignore(Toy.WORKING, Timer("nag"), why="x")


def test_starting_event_declared_twice_is_refused() -> None:
    machine = toy()
    with pytest.raises(DefinitionError, match="declared twice"):
        machine.start(
            ToyStarted,
            key=lambda e: e.job_id,
            init=lambda e: ToyData(job_id=e.job_id),
            to=Toy.DONE,
        )


def test_transition_out_of_compensating_is_reported() -> None:
    machine = toy()
    machine.ignore(Toy.WORKING, ToyPoked, why="not interesting")
    machine.on(Toy.COMPENSATING, ToyPoked, to=Toy.FAILED)
    with pytest.raises(DefinitionError, match="compensating"):
        machine.validate()


def test_push_of_unregistered_compensation_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="ToyWork is not a registered compensation"):
        toy().compensation_reply(ToyWork)


# --- introspection of the order machine --------------------------------------------------------


def test_order_active_states() -> None:
    assert order_machine.active_states == [
        S.AWAITING_PAYMENT,
        S.AWAITING_INVENTORY,
        S.AWAITING_SHIPMENT,
    ]
    assert order_machine.final == {
        "completed",
        "failed",
        "cancelled",
        "compensation_failed",
        "aborted",
    }
    assert order_machine.compensating == "compensating"


def test_order_consumes_its_inputs_not_its_own_outputs() -> None:
    assert order_machine.consumed_events == [
        "InventoryReleased",
        "InventoryReservationFailed",
        "InventoryReserved",
        "OrderCancellationRequested",
        "OrderShipped",
        "OrderSubmitted",
        "PaymentFailed",
        "PaymentProcessed",
        "PaymentRefunded",
        "ShipmentCancelled",
        "ShipmentFailed",
    ]
    for event in order_machine.consumed_events:
        assert machine_for(event) is order_machine
    # Consuming its own outcome events would feed the saga its own output.
    assert machine_for("OrderCompleted") is None
    assert machine_for("OrderFailed") is None


def test_order_every_active_pair_is_decided() -> None:
    decided = order_machine.transitions.keys() | order_machine.ignores.keys()
    confirmations = set(order_machine.compensations.values())
    for state in order_machine.active_states:
        for trigger in order_machine.triggers - confirmations:
            assert (state.value, trigger) in decided, (state, trigger)


def test_order_every_waiting_state_has_a_timeout() -> None:
    # No saga may wait forever for a worker: every active state handles the step timer.
    for state in order_machine.active_states:
        assert (state.value, "timer:step-timeout") in order_machine.transitions


def _successors(edges: list[tuple[str | None, str, str]]) -> dict[str | None, set[str]]:
    graph: dict[str | None, set[str]] = {}
    for source, _, target in edges:
        graph.setdefault(source, set()).add(target)
    return graph


def _reach(graph: dict[str | None, set[str]], start: str | None) -> set[str]:
    seen: set[str] = set()
    frontier = list(graph.get(start, ()))
    while frontier:
        state = frontier.pop()
        if state not in seen:
            seen.add(state)
            frontier += graph.get(state, ())
    return seen


def test_order_every_state_is_reachable_from_a_start() -> None:
    graph = _successors(order_machine.edges())
    assert _reach(graph, None) == {s.value for s in S}


def test_order_every_state_can_still_finish() -> None:
    graph = _successors(order_machine.edges())
    for state in S:
        if state.value not in order_machine.final:
            assert _reach(graph, state.value) & order_machine.final, state


def test_order_final_states_have_no_way_out() -> None:
    sources = {source for source, _, _ in order_machine.edges()}
    assert not sources & order_machine.final


def test_order_compensation_edges() -> None:
    edges = set(order_machine.edges())
    for reply in ("PaymentRefunded", "InventoryReleased", "ShipmentCancelled"):
        for target in ("compensating", "failed", "cancelled"):
            assert ("compensating", reply, target) in edges
    assert ("compensating", "timer:compensation-step", "compensation_failed") in edges
    assert order_machine.compensations == {
        "RefundPayment": "PaymentRefunded",
        "ReleaseInventory": "InventoryReleased",
        "CancelShipment": "ShipmentCancelled",
    }
