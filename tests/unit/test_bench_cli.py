"""`sagaline bench`: options are checked before anything connects."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sagaline_tools.cli import app

DEAD_AMQP = "amqp://guest:s3cret@127.0.0.1:1/"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quick", "--full"], "exclusive"),
        (["--only", "baseline,bogus"], "unknown section(s) bogus"),
        (["--env", "NOEQUALS"], "KEY=VALUE"),
        (["--orders", "0"], "--orders"),
        (["--repeat", "0"], "--repeat"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", *args], env={"AMQP_URL": DEAD_AMQP})
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_broker_exits_3_before_creating_anything() -> None:
    result = CliRunner().invoke(app, ["bench", "--quick"], env={"AMQP_URL": DEAD_AMQP})
    assert result.exit_code == 3, result.output
    assert "cannot reach RabbitMQ" in result.stderr
    assert "s3cret" not in result.stderr


def test_help_names_every_section() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for section in ("baseline", "minimal", "orchestrator", "e2e", "latency", "scale", "timers"):
        assert section in result.stdout
