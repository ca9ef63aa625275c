"""Real sagaline processes for fault scenarios: start, crash, restart, scrape metrics, stop.

A thin layer over tests.e2e.conftest (the same `Process`/`System` the end-to-end test uses),
with what fault scenarios need beyond it: several orchestrator replicas, per-process crash
settings, waiting for a crash exit, restarting, pids (a process must never restart by itself),
and Prometheus metrics. Every wait polls for a condition under a deadline; none sleeps blindly.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from sagaline.faults import CRASH_EXIT_CODE
from sagaline.settings import Settings
from tests.e2e.conftest import Process, System, _free_port

ORDER_WORKERS = ("payments", "inventory", "shipping")
"""The order workflow's workers: the scenarios drive orders, so only these run (faster)."""

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Poll `probe` until it returns something other than None/False; fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Harness:
    settings: Settings
    tmp_path: Path
    base_env: dict[str, str] = field(default_factory=dict)
    system: System = field(init=False)
    pids: dict[str, list[int]] = field(default_factory=dict)
    """Every pid each process ever had, in start order (a restart appends one)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent starting, restarting and stopping processes (for the report)."""

    def __post_init__(self) -> None:
        self.system = System(self.settings)

    # --- set-up ---------------------------------------------------------------------------------

    def add(
        self, name: str, args: list[str], *, host: str = "127.0.0.1", prefix: tuple[str, ...] = ()
    ) -> Process:
        """`host` and `prefix`: a process on another host (tests/faults/hosts.py)."""
        process = Process(
            name, args, _free_port(), self.tmp_path / f"{name}.log", host=host, prefix=prefix
        )
        self.system.processes.append(process)
        return process

    def add_orchestrators(self, count: int = 1) -> list[str]:
        names = ["orchestrator"] if count == 1 else [f"orchestrator-{i}" for i in range(count)]
        for name in names:
            self.add(name, ["-m", "orchestrator"])
        return names

    def add_workers(self, workers: Iterable[str] = ORDER_WORKERS) -> list[str]:
        names = list(workers)
        for name in names:
            self.add(name, ["-m", "consumers", name])
        return names

    def process(self, name: str) -> Process:
        return self.system.by_name(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.system.processes]

    # --- life cycle -----------------------------------------------------------------------------

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        process = self.process(name)
        assert process.popen is None or process.popen.poll() is not None, f"{name} is running"
        self.system.start(process, {**self.base_env, **(env or {})})
        assert process.popen is not None
        self.pids.setdefault(name, []).append(process.popen.pid)

    async def start_all(
        self, names: Iterable[str] | None = None, env: dict[str, dict[str, str]] | None = None
    ) -> None:
        chosen = list(self.names if names is None else names)
        began = time.monotonic()
        for name in chosen:
            self.start(name, (env or {}).get(name))
        await self.wait_ready(chosen)
        self._took("start", began)

    def _took(self, what: str, began: float) -> None:
        self.timings[what] = self.timings.get(what, 0.0) + time.monotonic() - began

    async def wait_ready(self, names: Iterable[str], within: float = 60.0) -> None:
        pending = list(names)

        async def probe() -> bool:
            for name in list(pending):
                process = self.process(name)
                assert process.popen is not None
                if process.popen.poll() is not None:
                    raise AssertionError(f"{name} exited early:\n{process.log_tail()}")
                if await asyncio.to_thread(process.ready):
                    pending.remove(name)
            return not pending

        try:
            await eventually(probe, within=within, what=f"readiness of {pending}", interval=0.2)
        except AssertionError as exc:
            details = "\n".join(
                f"--- {n}: {_readyz(self.process(n))}\n{self.process(n).log_tail(10)}"
                for n in pending
            )
            raise AssertionError(f"{exc}\n{details}") from None

    async def wait_exit(self, name: str, within: float) -> int:
        """Wait for a process to exit on its own (a crash point); returns its exit code."""
        process = self.process(name)
        assert process.popen is not None
        popen = process.popen

        async def probe() -> tuple[int] | None:
            code = popen.poll()
            return None if code is None else (code,)  # a tuple: exit code 0 is falsy

        (code,) = await eventually(probe, within=within, what=f"{name} to exit", interval=0.05)
        return code

    async def wait_crash(self, name: str, within: float) -> None:
        code = await self.wait_exit(name, within)
        assert code == CRASH_EXIT_CODE, (
            f"{name} exited {code}, not at its crash point:\n{self.process(name).log_tail()}"
        )

    async def restart(self, name: str, env: dict[str, str] | None = None) -> None:
        began = time.monotonic()
        if self.alive(name):
            await self.stop(name)
        self.start(name, env)
        await self.wait_ready([name])
        self._took("restart", began)

    async def stop(self, name: str) -> int | None:
        """SIGTERM, then SIGKILL after the grace period (System.stop)."""
        return await asyncio.to_thread(self.system.stop, self.process(name))

    async def stop_all(self) -> None:
        began = time.monotonic()
        await asyncio.gather(*(self.stop(p.name) for p in self.system.processes))
        self._took("stop", began)

    def kill(self, name: str) -> None:
        popen = self.process(name).popen
        if popen is not None and popen.poll() is None:
            popen.send_signal(signal.SIGKILL)
            popen.wait(timeout=10)

    def alive(self, name: str) -> bool:
        popen = self.process(name).popen
        return popen is not None and popen.poll() is None

    def pid(self, name: str) -> int:
        popen = self.process(name).popen
        assert popen is not None
        return popen.pid

    def returncode(self, name: str) -> int | None:
        popen = self.process(name).popen
        return None if popen is None else popen.poll()

    # --- observation ----------------------------------------------------------------------------

    def metrics(self, name: str) -> dict[str, float]:
        """The process's /metrics as {sample name + labels: value}; {} when it cannot answer."""
        process = self.process(name)
        url = f"http://{process.host}:{process.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return {}
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    async def metric_total(self, names: Iterable[str], metric: str) -> float:
        """The sum of one metric's samples (all label sets) over several processes."""
        total = 0.0
        pattern = re.compile(rf"^{re.escape(metric)}\{{")
        for name in names:
            samples = await asyncio.to_thread(self.metrics, name)
            total += sum(v for k, v in samples.items() if pattern.match(k))
        return total

    def logs(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for process in self.system.processes:
            try:
                found[process.name] = process.log_path.read_text(errors="replace")
            except OSError:
                found[process.name] = ""
        return found

    def log_bytes(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for process in self.system.processes:
            try:
                found[process.name] = process.log_path.read_bytes()
            except OSError:
                found[process.name] = b""
        return found


def _readyz(process: Process) -> str:
    try:
        url = f"http://{process.host}:{process.port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return f"{response.status} {response.read()[:200]!r}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read()[:200]!r}"
    except OSError as exc:
        return f"no answer ({type(exc).__name__})"


def run_quiet(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run a helper command; its output in the error when it fails."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout
