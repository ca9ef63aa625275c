"""`sagaline up`'s process loop, with tiny stand-in processes instead of sagaline's own."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from sagaline_tools.cli.runner import Runner, last_log_line
from sagaline_tools.cli.supervisor import Backoff, ChildSpec, ChildStatus, Phase

FAST = Backoff(initial=0.05, factor=2.0, maximum=0.2, reset_after=60.0)


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def status(name: str, code: str, port: int = 9999, max_failures: int | None = None) -> ChildStatus:
    return ChildStatus(ChildSpec(name, python(code), port), backoff=FAST, max_failures=max_failures)


def runner(
    children: list[ChildStatus],
    log_dir: Path,
    env: dict[str, str] | None = None,
    stop_timeout: float = 5.0,
) -> Runner:
    async def log_says_ready(spec: ChildSpec) -> tuple[bool, str]:
        # A line of its own: the log's header line quotes the child's code, "ready" included.
        ready = "ready" in (log_dir / f"{spec.name}.log").read_text().splitlines()
        return ready, "" if ready else "waiting"

    return Runner(
        children,
        env=env or {"PATH": "/usr/bin:/bin"},
        log_dir=log_dir,
        stop_timeout=stop_timeout,
        probe=log_says_ready,
        tick=0.02,
        probe_interval=0.05,
    )


async def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.02)


SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"


async def test_crashing_child_is_restarted_then_given_up(tmp_path: Path) -> None:
    crasher = status("crasher", "print('boom'); raise SystemExit(3)", max_failures=3)
    loop = runner([crasher], tmp_path)
    clean = await asyncio.wait_for(loop.run(), 10)
    assert not clean
    assert loop.gave_up == [crasher]
    assert crasher.phase is Phase.FAILED
    assert crasher.restarts == 2
    assert crasher.last_exit == 3
    assert crasher.detail == "boom"
    assert (tmp_path / "crasher.log").read_text().count("starting:") == 3


async def test_ready_child_stops_cleanly_on_request(tmp_path: Path) -> None:
    sleeper = status("sleeper", SLEEPER, port=8123)
    loop = runner([sleeper], tmp_path)
    task = asyncio.create_task(loop.run())
    await wait_until(lambda: sleeper.phase is Phase.READY)
    assert sleeper.pid is not None
    loop.request_stop()
    assert await asyncio.wait_for(task, 10) is True
    assert sleeper.phase is Phase.STOPPED
    assert sleeper.stop_exit == -signal.SIGTERM
    assert not sleeper.killed


async def test_child_gets_its_port_and_the_environment(tmp_path: Path) -> None:
    code = "import os; print('port', os.environ['SAGALINE_HTTP_PORT'], os.environ['MARK'])"
    child = status("env", code + "; print('ready'); import time; time.sleep(60)", port=8765)
    loop = runner([child], tmp_path, env={"MARK": "m1"})
    task = asyncio.create_task(loop.run())
    await wait_until(lambda: child.phase is Phase.READY)
    loop.request_stop()
    await asyncio.wait_for(task, 10)
    assert "port 8765 m1" in (tmp_path / "env.log").read_text()


async def test_child_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    stubborn = status(
        "stubborn",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)",
    )
    loop = runner([stubborn], tmp_path, stop_timeout=0.3)
    task = asyncio.create_task(loop.run())
    await wait_until(lambda: stubborn.phase is Phase.READY)
    loop.request_stop()
    assert await asyncio.wait_for(task, 10) is False
    assert stubborn.killed
    assert stubborn.stop_exit == -signal.SIGKILL


async def test_second_stop_request_kills_at_once(tmp_path: Path) -> None:
    stubborn = status(
        "stubborn",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)",
    )
    loop = runner([stubborn], tmp_path, stop_timeout=30.0)
    task = asyncio.create_task(loop.run())
    await wait_until(lambda: stubborn.phase is Phase.READY)
    loop.request_stop()
    await asyncio.sleep(0.1)
    loop.request_stop()  # an impatient second Ctrl-C
    assert await asyncio.wait_for(task, 5) is False
    assert stubborn.killed


async def test_missing_interpreter_counts_as_a_crash(tmp_path: Path) -> None:
    ghost = ChildStatus(
        ChildSpec("ghost", (str(tmp_path / "no-such-python"),), 9999),
        backoff=FAST,
        max_failures=2,
    )
    loop = runner([ghost], tmp_path)
    assert await asyncio.wait_for(loop.run(), 10) is False
    assert ghost.phase is Phase.FAILED
    assert ghost.detail.startswith("cannot start")


def test_last_log_line(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("first\nTraceback...\nValueError: bad\n\n")
    assert last_log_line(log) == "ValueError: bad"
    assert last_log_line(tmp_path / "missing.log") == ""


def test_last_log_line_prefers_the_exception_of_the_latest_run(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "--- t1 starting: python -m x\nKeyError: old\n"
        "--- t2 starting: python -m x\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1\n'
        "aiormq.exceptions.ChannelPreconditionFailed: PRECONDITION_FAILED - inequivalent arg\n"
        "\n"
        "ERROR:    Application startup failed. Exiting.\n"
    )
    assert last_log_line(log).startswith("ChannelPreconditionFailed: PRECONDITION_FAILED")
    log.write_text("--- t1 starting\nKeyError: old\n--- t2 starting\n")
    assert last_log_line(log) == ""
