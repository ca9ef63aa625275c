"""What `sagaline demo enrollment|documents` print: a table of expected against reached final
states per group (sagaline_tools.cli.demo_tables), and ids with a single `demo-` prefix (no
services: the demos' run functions are replaced by fakes that return a finished result)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from rich.console import Console, RenderableType
from typer.testing import CliRunner

from sagaline_tools.cli import app, demo_workflows
from sagaline_tools.cli.demo_tables import (
    OutcomeRow,
    documents_view,
    enrollment_view,
    outcome_table,
)
from sagaline_tools.demos import documents, enrollment


def text(renderable: RenderableType) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(renderable)
    return buffer.getvalue()


def row_of(rendered: str, label: str) -> list[str]:
    (line,) = [line for line in rendered.splitlines() if f" {label} " in line]
    return [cell.strip() for cell in line.strip("│┃ ").split("│")]


def enrollment_result(
    scenario: enrollment.EnrollmentScenario, states: Mapping[uuid.UUID, str] | None = None
) -> enrollment.DemoResult:
    """A run that went as predicted: the first `seats` racers won."""
    if states is None:
        won = {r.saga_id for r in scenario.requests if r.group is enrollment.Group.RACE}
        won = set(list(won)[: scenario.expected_seats[scenario.courses[0].course_id]])
        states = {r.saga_id: "completed" if r.saga_id in won else "failed" for r in scenario.sagas}
    problems = scenario.check(states, scenario.expected_seats)
    return enrollment.DemoResult(
        scenario, states, {}, dict(scenario.expected_seats), tuple(problems), 3.2, False
    )


def documents_result(scenario: documents.DocumentScenario) -> documents.DemoResult:
    states = {d.saga_id: d.expected_state for d in scenario.documents}
    answers = sum(len(d.roles) for d in scenario.documents)
    return documents.DemoResult(scenario, states, {}, answers, (), 4.5, False)


def test_outcome_table_compares_tallies_and_counts_pending() -> None:
    rows = [
        OutcomeRow("race", {"completed": 2, "failed": 1}, {"failed": 1, "completed": 2}, 0),
        OutcomeRow("slow", {"failed": 2}, {"failed": 1}, 1),
    ]
    rendered = text(outcome_table("t", "group", rows))
    assert row_of(rendered, "race") == [
        "race",
        "3",
        "completed 2, failed 1",
        "completed 2, failed 1",
        "0",
    ]
    assert row_of(rendered, "slow") == ["slow", "2", "failed 2", "failed 1", "1"]


def test_enrollment_view_shows_each_group_the_seats_and_the_verdict() -> None:
    scenario = enrollment.build_scenario("abc123", racers=6, seats=2)
    rendered = text(enrollment_view(enrollment_result(scenario)))
    assert row_of(rendered, "race")[1:4] == ["6", "completed 2, failed 4", "completed 2, failed 4"]
    assert row_of(rendered, "duplicate")[1:4] == ["1", "no saga 1", "no saga 1"]
    assert row_of(rendered, "demo-abc123-popular") == ["demo-abc123-popular", "2", "2", "2"]
    assert "✓ every saga ended as predicted in 3.2s" in rendered
    assert "{" not in rendered  # no raw dicts


def test_enrollment_view_lists_the_problems() -> None:
    scenario = enrollment.build_scenario("abc123", racers=3, seats=1)
    states = {r.saga_id: "completed" for r in scenario.sagas}  # over-sold
    rendered = text(enrollment_view(enrollment_result(scenario, states)))
    assert row_of(rendered, "race")[2:4] == ["completed 1, failed 2", "completed 3"]
    assert "race: expected {'completed': 1, 'failed': 2}, got {'completed': 3}" in rendered
    assert "✗" in rendered


def test_documents_view_shows_each_kind_with_its_approvals() -> None:
    scenario = documents.build_scenario("abc123", rounds=2)
    rendered = text(documents_view(documents_result(scenario)))
    assert row_of(rendered, "critical-full-chain") == [
        "critical-full-chain",
        "data_steward, dba, compliance, governance_lead",
        "2",
        "completed 2",
        "completed 2",
        "0",
    ]
    assert row_of(rendered, "auto-approved")[1] == "none (auto)"
    assert row_of(rendered, "rejected-by-dba")[3:5] == ["rejected 2", "rejected 2"]
    assert "22 approval answers" in rendered
    assert "{" not in rendered


def test_documents_view_shows_pending_sagas_of_a_timed_out_run() -> None:
    scenario = documents.build_scenario("abc123")
    states = {d.saga_id: "awaiting_approvals" for d in scenario.documents}
    result = documents.DemoResult(scenario, states, {}, 0, (), 120.0, True)
    rendered = text(documents_view(result))
    assert row_of(rendered, "filing-fails")[3:] == ["failed 1", "-", "1"]
    assert "✗ timed out after 120.0s" in rendered


# --- the commands, with the demos' run replaced ----------------------------------------------


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    async def reachable(settings: Any) -> bool:
        return True

    def fake(result_of: Callable[[Any], Any]) -> Callable[..., Any]:
        async def run(settings: Any, scenario: Any, **options: Any) -> Any:
            return result_of(scenario)

        return run

    monkeypatch.setattr(demo_workflows, "check_broker", reachable)
    monkeypatch.setattr(demo_workflows, "check_database", reachable)
    monkeypatch.setattr(enrollment, "run", fake(enrollment_result))
    monkeypatch.setattr(documents, "run", fake(documents_result))


@pytest.mark.parametrize(
    ("command", "id_fields"),
    [
        (["enrollment", "--racers", "4", "--seats", "2"], ("requests", "user_id", "course_id")),
        (["documents"], ("documents", "document_id")),
    ],
)
def test_demo_ids_carry_one_prefix(fake_runs: None, command: list[str], id_fields: Any) -> None:
    result = CliRunner().invoke(app, ["demo", *command, "--json"])
    assert result.exit_code == 0, result.output
    listing, *fields = id_fields
    ids = [item[f] for item in json.loads(result.stdout)[listing] for f in fields]
    assert ids and all(i.startswith("demo-") and not i.startswith("demo-demo-") for i in ids)


@pytest.mark.parametrize("command", ["enrollment", "documents"])
def test_demos_print_a_table_not_a_dict(fake_runs: None, command: str) -> None:
    result = CliRunner().invoke(app, ["demo", command], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"demo {command}" in result.stdout
    assert "✓ every saga ended as predicted" in result.stdout
    assert "{" not in result.stdout and "run_tag" not in result.stdout
