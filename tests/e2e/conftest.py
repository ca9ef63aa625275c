"""Run sagaline as real OS processes (as `sagaline up` does) against the test run's services."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sagaline.settings import Settings
from tests.e2e.diagnostics import queue_depths

READY_DEADLINE_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    args: list[str]
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    """The address its health and metrics server listens on (another host's, in a network
    namespace: tests/faults/hosts.py)."""
    prefix: tuple[str, ...] = ()
    """Runs the interpreter through this command (`ip netns exec NS`, which execs it)."""

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.port}/readyz", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


@dataclass
class System:
    settings: Settings
    processes: list[Process] = field(default_factory=list)

    def by_name(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def start(self, process: Process, extra_env: dict[str, str] | None = None) -> None:
        env = {
            **os.environ,
            "AMQP_URL": self.settings.amqp_url,
            "DATABASE_URL": self.settings.database_url,
            "SAGALINE_NAMESPACE": self.settings.namespace,
            "SAGALINE_RETRY_DELAYS": ",".join(str(d) for d in self.settings.retry_delays),
            "SAGALINE_STEP_TIMEOUT_SECONDS": str(self.settings.step_timeout_seconds),
            "SAGALINE_HTTP_HOST": process.host,
            "SAGALINE_HTTP_PORT": str(process.port),
            # Commands a step decides are published by the orchestrator's intake right after
            # the commit, and the other writers wake the relay; its poll is only a fallback
            # for crashes, which these tests do not inject. Ten minutes, so that a broken
            # wake-up or dispatch shows up as a stuck saga rather than a slow one.
            "SAGALINE_RELAY_POLL_SECONDS": "600",
            "SAGALINE_TIMER_POLL_SECONDS": "0.5",
            **(extra_env or {}),
        }
        log = process.log_path.open("ab")
        process.popen = subprocess.Popen(
            [*process.prefix, sys.executable, *process.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        pending = list(self.processes)
        while pending and time.monotonic() < deadline:
            for process in list(pending):
                assert process.popen is not None
                if process.popen.poll() is not None:
                    raise AssertionError(f"{process.name} exited early:\n{process.log_tail()}")
                if process.ready():
                    pending.remove(process)
            time.sleep(0.2)
        if pending:
            raise AssertionError(
                "not ready: " + ", ".join(p.name for p in pending) + "\n" + pending[0].log_tail()
            )

    def stop(self, process: Process, grace_s: float = 20.0) -> int | None:
        if process.popen is None or process.popen.poll() is not None:
            return process.popen.returncode if process.popen else None
        process.popen.send_signal(signal.SIGTERM)
        try:
            return process.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.popen.pid, signal.SIGKILL)
            return process.popen.wait(timeout=5)

    def stop_all(self) -> None:
        for process in self.processes:
            self.stop(process)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran the processes shows the consumers' queues and what each process
    logged last: a stuck saga's cause is usually there, and the logs live in a temporary
    directory nobody reads."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    value = getattr(item, "funcargs", {}).get("system")
    if report.failed and call.when == "call" and isinstance(value, System):
        report.sections.append(("broker queues", _queue_report(value)))
        for process in value.processes:
            report.sections.append((f"{process.name} log (last lines)", process.log_tail(25)))


def _queue_report(system: System) -> str:
    consumers = [process.name for process in system.processes]
    try:
        return "\n".join(asyncio.run(queue_depths(system.settings, consumers)))
    except Exception as exc:  # the report must not hide the test's own failure
        return f"could not read the queues: {exc!r}"


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[System]:
    """The orchestrator and every worker as separate processes; stopped even on failure."""
    from consumers import WORKERS

    value = System(settings)
    workers = [(name, ["-m", "consumers", name]) for name in WORKERS]
    for name, args in [("orchestrator", ["-m", "orchestrator"]), *workers]:
        value.processes.append(Process(name, args, _free_port(), tmp_path / f"{name}.log"))
    try:
        for process in value.processes:
            value.start(process)
        value.wait_ready()
        yield value
    finally:
        value.stop_all()
