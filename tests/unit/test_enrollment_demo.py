"""The enrollment demo's scenario: pure, deterministic per run tag, and its own judge."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from sagaline_tools.demos.enrollment import NO_SAGA, Group, build_scenario

TAG = "abc123"


def test_default_scenario_shape() -> None:
    scenario = build_scenario(TAG)

    groups = Counter(r.group for r in scenario.requests)
    assert groups == {Group.RACE: 20, Group.FULL: 2, Group.ACCESS_CLOSED: 2, Group.DUPLICATE: 1}
    popular, full, closed = scenario.courses
    assert (popular.capacity, popular.access_open) == (5, True)
    assert (full.capacity, full.access_open) == (0, True)
    assert (closed.capacity, closed.access_open) == (2, False)
    assert dict(scenario.expected_counts) == {
        Group.RACE: {"completed": 5, "failed": 15},
        Group.FULL: {"failed": 2},
        Group.ACCESS_CLOSED: {"failed": 2},
        Group.DUPLICATE: {NO_SAGA: 1},
    }
    assert dict(scenario.expected_seats) == {
        popular.course_id: 5,
        full.course_id: 0,
        closed.course_id: 0,
    }


def test_requests_are_distinct_except_the_duplicates() -> None:
    scenario = build_scenario(TAG)
    saga_ids = [r.saga_id for r in scenario.requests]
    assert len(set(saga_ids)) == len(saga_ids)
    originals = scenario.sagas
    pairs = {(r.user_id, r.course_id) for r in originals}
    assert len(pairs) == len(originals)  # one saga per (user, course)
    by_id = {r.saga_id: r for r in originals}
    for duplicate in (r for r in scenario.requests if r.duplicate_of is not None):
        assert duplicate.duplicate_of is not None
        original = by_id[duplicate.duplicate_of]
        assert duplicate.request == original.request  # same user and course, new correlation id
        assert duplicate.saga_id != original.saga_id
        assert duplicate.group is Group.DUPLICATE and original.group is Group.RACE


def test_deterministic_per_tag_and_distinct_across_tags() -> None:
    assert build_scenario(TAG) == build_scenario(TAG)
    other = build_scenario("other-run")
    assert not {r.saga_id for r in other.requests} & {
        r.saga_id for r in build_scenario(TAG).requests
    }
    assert not {c.course_id for c in other.courses} & {
        c.course_id for c in build_scenario(TAG).courses
    }


def test_fewer_racers_than_seats_all_complete() -> None:
    scenario = build_scenario(TAG, racers=3, seats=5, no_capacity=0, access_refused=0, duplicates=0)
    assert dict(scenario.expected_counts) == {Group.RACE: {"completed": 3}}
    assert scenario.expected_seats[scenario.courses[0].course_id] == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"racers": -1}, {"duplicates": 21}, {"seats": -2}],
)
def test_bad_counts_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"duplicates|negative"):
        build_scenario(TAG, **kwargs)


@pytest.mark.parametrize("tag", ["", "UPPER", "with space", "a/b", "x" * 41])
def test_bad_run_tags_are_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="run tag"):
        build_scenario(tag)


def _as_predicted(scenario_tag: str = TAG) -> tuple[dict[uuid.UUID, str], dict[str, int]]:
    scenario = build_scenario(scenario_tag)
    states: dict[uuid.UUID, str] = {}
    race = [r for r in scenario.requests if r.group is Group.RACE]
    for index, item in enumerate(race):
        states[item.saga_id] = "completed" if index % 4 == 0 else "failed"
    for item in scenario.requests:
        if item.group in (Group.FULL, Group.ACCESS_CLOSED):
            states[item.saga_id] = "failed"
    return states, dict(scenario.expected_seats)


def test_check_accepts_any_five_winners() -> None:
    states, seats = _as_predicted()
    assert build_scenario(TAG).check(states, seats) == []


def test_check_reports_every_kind_of_surprise() -> None:
    scenario = build_scenario(TAG)
    states, seats = _as_predicted()
    race = [r for r in scenario.requests if r.group is Group.RACE]
    loser = next(r for r in race if states[r.saga_id] == "failed")
    states[loser.saga_id] = "completed"  # a sixth seat sold
    duplicate = next(r for r in scenario.requests if r.group is Group.DUPLICATE)
    states[duplicate.saga_id] = "checking_capacity"  # the duplicate started a saga
    closed = next(r for r in scenario.requests if r.group is Group.ACCESS_CLOSED)
    states[closed.saga_id] = "compensation_failed"
    seats[scenario.courses[0].course_id] = 6

    problems = scenario.check(states, seats)

    assert any(p.startswith("race: expected {'completed': 5, 'failed': 15}") for p in problems)
    assert any(p.startswith("duplicate request") and "got checking_capacity" in p for p in problems)
    assert any("expected failed, got compensation_failed" in p for p in problems)
    assert any(p.endswith("expected 5 seats taken, got 6") for p in problems)
