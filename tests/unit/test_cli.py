"""The `sagaline` command line: help, argument errors and service errors as one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sagaline_tools.cli import app

# Ports nothing listens on: connecting fails at once with "connection refused".
DEAD_AMQP = "amqp://guest:s3cret@127.0.0.1:1/"
DEAD_DB = "postgresql://postgres:s3cret@127.0.0.1:1/sagaline"

COMMANDS = [[], ["migrate"], ["up"], ["demo"], ["demo", "order"]]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def assert_one_line_error(result: Result, *, code: int | None = None, contains: str = "") -> None:
    exit_code = result.exit_code
    stderr = result.stderr
    assert exit_code != 0, stderr
    if code is not None:
        assert exit_code == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    assert contains in lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "root")
def test_help_of_every_command(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_root_lists_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    for name in ("migrate", "up", "demo"):
        assert name in result.stdout


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("sagaline ")


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (["bogus"], "No such command"),
        (["migrate", "--nope"], "No such option"),
        (["demo", "order", "--count", "0"], "--count"),
        (["demo", "order", "--count", "many"], "--count"),
        (["demo", "order", "--timeout", "0"], "--timeout"),
        (["up", "--base-port", "70000"], "--base-port"),
        (["up", "--max-failures", "0"], "--max-failures"),
    ],
)
def test_bad_arguments_give_one_line(runner: CliRunner, args: list[str], contains: str) -> None:
    result = runner.invoke(app, args)
    assert_one_line_error(result, code=2, contains=contains)
    assert "--help" in result.stderr  # points at the command's help


def test_unknown_worker(runner: CliRunner) -> None:
    result = runner.invoke(app, ["up", "--worker", "nope"])
    assert_one_line_error(result, code=2, contains="unknown worker nope")


def test_ports_beyond_range(runner: CliRunner) -> None:
    result = runner.invoke(app, ["up", "--base-port", "65534"])
    assert_one_line_error(result, code=2, contains="65536")


def test_invalid_configuration_names_the_variable(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGALINE_RETRY_DELAYS", "soon")
    result = runner.invoke(app, ["migrate"])
    assert_one_line_error(result, code=2, contains="SAGALINE_RETRY_DELAYS")


def test_invalid_configuration_hides_values(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGALINE_NAMESPACE", "Bad Namespace s3cret")
    result = runner.invoke(app, ["migrate"])
    assert_one_line_error(result, code=2, contains="SAGALINE_NAMESPACE")
    assert "s3cret" not in result.stderr


def test_unreachable_database(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", DEAD_DB)
    result = runner.invoke(app, ["migrate"])
    assert_one_line_error(result, code=3, contains="cannot reach PostgreSQL")
    assert "s3cret" not in result.stderr
    assert "***" in result.stderr


def free_ports(count: int) -> int:
    """A base port with `count` consecutive free ports (`up` checks its ports first)."""
    import socket

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("0.0.0.0", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


@pytest.mark.parametrize("args", [["demo", "order"], ["up", "--base-port", "{base}"]])
def test_unreachable_broker(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, args: list[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("AMQP_URL", DEAD_AMQP)
    monkeypatch.chdir(tmp_path)  # `up` creates its log directory before the checks
    base = str(free_ports(8))
    result = runner.invoke(app, [arg.replace("{base}", base) for arg in args])
    assert_one_line_error(result, code=3, contains="cannot reach RabbitMQ")
    assert "s3cret" not in result.stderr


def test_unexpected_errors_are_one_line(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from sagaline_tools.cli import migrate

    async def explode(settings: object) -> dict[str, object]:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(migrate, "run_migrations", explode)
    result = runner.invoke(app, ["migrate"])
    assert_one_line_error(result, code=1, contains="unexpected error: RuntimeError: boom")


def test_port_in_use(runner: CliRunner, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["up", "--base-port", str(port), "--log-dir", str(tmp_path)])
    assert_one_line_error(result, code=2, contains=f"port {port} (orchestrator)")
