"""Confidence routing and approval bookkeeping of the document workflow, as tables."""

from __future__ import annotations

import pytest

from contracts.documents import Route, Signoff
from orchestrator.workflows.documents_rules import (
    AUTO_APPROVE_AT,
    SINGLE_APPROVER_AT,
    Answer,
    classify_answer,
    pending_roles,
    required_roles,
    route_for,
)

CHAINS = {
    1: ("data_steward",),
    2: ("data_steward", "dba"),
    3: ("data_steward", "dba", "compliance"),
    4: ("data_steward", "dba", "compliance", "governance_lead"),
}


@pytest.mark.parametrize(
    ("score", "sensitive", "route"),
    [
        (1.0, False, "auto"),
        (0.95, False, "auto"),  # boundary: >= 0.95 auto-approves
        (0.9499, False, "single"),
        (0.95, True, "single"),  # sensitive content is never auto-approved
        (1.0, True, "single"),
        (0.80, False, "single"),  # boundary: >= 0.80 needs one approver
        (0.80, True, "single"),
        (0.7999, False, "full"),
        (0.7999, True, "full"),
        (0.0, False, "full"),
    ],
)
def test_route_for_each_band_and_boundary(score: float, sensitive: bool, route: Route) -> None:
    assert route_for(score, sensitive) == route


def test_band_thresholds_are_the_documented_ones() -> None:
    assert (AUTO_APPROVE_AT, SINGLE_APPROVER_AT) == (0.95, 0.80)


@pytest.mark.parametrize("tier", sorted(CHAINS))
@pytest.mark.parametrize("route", ["auto", "single", "full"])
def test_required_roles_per_tier_and_route(tier: int, route: Route) -> None:
    chain = CHAINS[tier]
    expected = {"auto": (), "single": (chain[-1],), "full": chain}[route]
    assert required_roles(route, chain) == expected


def _signed(*roles: str) -> tuple[Signoff, ...]:
    return tuple(Signoff(role=r, approver=f"{r}-person") for r in roles)


@pytest.mark.parametrize(
    ("role", "signed", "answer"),
    [
        ("dba", (), Answer.COUNTS),
        ("dba", ("data_steward",), Answer.COUNTS),
        ("dba", ("dba",), Answer.ALREADY_ANSWERED),
        ("compliance", (), Answer.NOT_REQUIRED),
        ("compliance", ("compliance",), Answer.NOT_REQUIRED),
    ],
)
def test_classify_answer(role: str, signed: tuple[str, ...], answer: Answer) -> None:
    assert classify_answer(role, CHAINS[2], _signed(*signed)) is answer


def test_pending_roles_keep_chain_order() -> None:
    assert pending_roles(CHAINS[4], _signed("dba")) == (
        "data_steward",
        "compliance",
        "governance_lead",
    )
    assert pending_roles(CHAINS[2], _signed("dba", "data_steward")) == ()
