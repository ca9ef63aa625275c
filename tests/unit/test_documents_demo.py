"""The document demo's scenario: pure, deterministic, one document per route and outcome."""

from __future__ import annotations

import uuid

import pytest

from consumers.documents import rules as worker_rules
from orchestrator.workflows import documents_rules as routing
from sagaline_tools.demos.documents import FINAL_STATES, Kind, build_scenario
from tests.unit.test_worker_rules_documents import TIERS


def test_one_round_has_each_kind_once_with_its_expected_state() -> None:
    scenario = build_scenario("t1")
    assert [d.kind for d in scenario.documents] == list(Kind)
    assert {d.kind: d.expected_state for d in scenario.documents} == {
        Kind.AUTO: "completed",
        Kind.SINGLE: "completed",
        Kind.PII: "completed",
        Kind.CRITICAL: "completed",
        Kind.REJECTED: "rejected",
        Kind.FILING_FAILS: "failed",
    }
    assert all(d.expected_state in FINAL_STATES for d in scenario.documents)


def test_deterministic_per_run_tag_and_unique_within_a_run() -> None:
    first, again, other = (
        build_scenario("t1", rounds=3),
        build_scenario("t1", rounds=3),
        build_scenario("t2"),
    )
    assert first == again
    assert len({d.saga_id for d in first.documents}) == len(first.documents) == 18
    assert len({d.document_id for d in first.documents}) == 18
    assert not {d.saga_id for d in first.documents} & {d.saga_id for d in other.documents}
    assert all(d.document_id.startswith("demo-t1-") for d in first.documents)


@pytest.mark.parametrize("kind", list(Kind))
def test_declared_roles_follow_from_the_seeded_tiers_and_routing(kind: Kind) -> None:
    (document,) = [d for d in build_scenario("t1").documents if d.kind is kind]
    change = document.change
    tier = worker_rules.tier_for(change.metadata, TIERS)
    assert tier is not None
    route = routing.route_for(change.quality_score, worker_rules.is_sensitive(change.metadata))
    assert routing.required_roles(route, tier.roles) == document.roles
    assert document.reject_by is None or document.reject_by in document.roles


def test_the_rejecting_role_rejects_and_every_other_role_approves() -> None:
    (rejected,) = [d for d in build_scenario("t1").documents if d.kind is Kind.REJECTED]
    assert rejected.grants("data_steward")
    assert not rejected.grants("dba")
    (failing,) = [d for d in build_scenario("t1").documents if d.kind is Kind.FILING_FAILS]
    assert failing.change.metadata.failure_drill == "filing"


def test_check_lists_documents_that_ended_elsewhere() -> None:
    scenario = build_scenario("t1")
    states = {d.saga_id: d.expected_state for d in scenario.documents}
    assert scenario.check(states) == []
    wrong = scenario.documents[0]
    states[wrong.saga_id] = "failed"
    del states[scenario.documents[1].saga_id]
    problems = scenario.check(states)
    assert len(problems) == 2
    assert "got failed" in problems[0]
    assert "got no saga" in problems[1]


@pytest.mark.parametrize(("tag", "rounds"), [("Bad Tag", 1), ("", 1), ("t1", 0)])
def test_invalid_arguments(tag: str, rounds: int) -> None:
    with pytest.raises(ValueError, match=r"run tag|rounds"):
        build_scenario(tag, rounds=rounds)


def test_saga_ids_are_uuids() -> None:
    assert all(isinstance(d.saga_id, uuid.UUID) for d in build_scenario("t1").documents)
