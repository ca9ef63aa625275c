"""CLI pieces of the console work that need no services: `up` plans the console, the timers'
due-time parsing, `operator add` refusing bad input before it connects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from sagaline_tools.cli import app
from sagaline_tools.cli.output import CliError
from sagaline_tools.cli.supervisor import plan_children
from sagaline_tools.cli.timers import new_due_time
from sagaline_tools.cli.up import console_spec

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_up_runs_the_console_on_its_own_port_on_localhost() -> None:
    others = plan_children(("payments",), 8080)
    spec = console_spec(8090, others)
    assert spec.name == "console" and spec.port == 8090
    assert spec.argv[1:] == (
        "-m", "sagaline_tools.cli", "console", "--host", "127.0.0.1", "--port", "8090",
    )  # fmt: skip
    with pytest.raises(CliError, match="console port 8081 is payments's"):
        console_spec(8081, others)


def test_new_due_time_takes_exactly_one_of_at_or_in() -> None:
    assert new_due_time(None, "2h", NOW) == NOW + timedelta(hours=2)
    at = new_due_time("2026-12-24T18:00:00+01:00", None, NOW)
    assert at == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
    for at_text, after in ((None, None), ("2026-12-24T18:00:00Z", "1h")):
        with pytest.raises(CliError, match="exactly one of --at or --in"):
            new_due_time(at_text, after, NOW)
    with pytest.raises(CliError, match="needs a time zone"):
        new_due_time("2026-12-24T18:00:00", None, NOW)
    with pytest.raises(CliError, match="is not an ISO-8601 time"):
        new_due_time("tomorrow", None, NOW)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["bad name", "--role", "viewer"], "x" * 20, "an operator name is"),
        (["anna", "--role", "viewer"], "short", "at least 12 characters"),
        (["anna", "--role", "king"], "x" * 20, "'king' is not one of"),
    ],
)
def test_operator_add_refuses_bad_input_before_connecting(
    args: list[str], stdin: str, message: str
) -> None:
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = CliRunner().invoke(
        app, ["operator", "add", *args, "--password-stdin"], input=stdin + "\n", env=env
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_console_and_timers_commands_have_help() -> None:
    for command in (["console"], ["timers", "list"], ["operator", "add"], ["dlq", "jobs"]):
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
