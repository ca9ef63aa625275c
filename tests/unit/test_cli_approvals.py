"""`sagaline approve|reject` and the workflow demos: argument handling without services."""

from __future__ import annotations

from typer.testing import CliRunner

from sagaline_tools.cli import app

runner = CliRunner()


def test_approve_requires_a_role() -> None:
    result = runner.invoke(app, ["approve", "doc-1"])
    assert result.exit_code == 2
    assert "--role" in result.output


def test_reject_help_names_its_options() -> None:
    result = runner.invoke(app, ["reject", "--help"])
    assert result.exit_code == 0
    for option in ("--role", "--by", "--comment", "--change", "--json"):
        assert option in result.output


def test_workflow_demos_are_registered() -> None:
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    assert "enrollment" in result.output
    assert "documents" in result.output


def test_enrollment_demo_refuses_zero_seats() -> None:
    result = runner.invoke(app, ["demo", "enrollment", "--seats", "0"])
    assert result.exit_code == 2
