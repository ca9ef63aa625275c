"""What `sagaline up` decides about its child processes, without touching a process.

Pure: every method takes the current time and returns or records a decision, so the restart
and stop rules are unit-tested without starting anything (the process loop is `runner.py`).
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting a child that exited on its own: doubles per crash, capped.

    A child that stayed up for `reset_after` seconds counts as healthy again, so one crash
    after hours of work restarts quickly instead of inheriting an old penalty.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.maximum < self.initial:
            raise ValueError("backoff needs initial > 0, factor >= 1 and maximum >= initial")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th crash in a row (1 = first)."""
        if failures <= 0:
            return 0.0
        # Bound the exponent: factor ** large overflows long before the cap matters.
        exponent = min(failures - 1, 64)
        return float(min(self.maximum, self.initial * self.factor**exponent))


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    port: int


def plan_children(
    workers: tuple[str, ...], base_port: int, python: str = sys.executable
) -> list[ChildSpec]:
    """The orchestrator on `base_port`, then each worker on the next port, in order."""
    specs = [ChildSpec("orchestrator", (python, "-m", "orchestrator"), base_port)]
    specs += [
        ChildSpec(name, (python, "-m", "consumers", name), base_port + offset)
        for offset, name in enumerate(workers, start=1)
    ]
    if specs[-1].port > 65535:
        raise ValueError(f"ports {base_port}..{specs[-1].port} do not fit below 65536")
    return specs


_CLEAN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def is_clean_exit(returncode: int) -> bool:
    """0, or ended by the SIGTERM/SIGINT we sent (uvicorn re-raises the signal it caught)."""
    return (
        returncode == 0
        or -returncode in _CLEAN_SIGNALS
        or returncode - 128 in _CLEAN_SIGNALS  # shells report signal deaths as 128 + n
    )


class Phase(StrEnum):
    PENDING = "pending"
    """Not started yet."""
    STARTING = "starting"
    """Running, /readyz has not answered 200 since this start."""
    READY = "ready"
    UNREADY = "unready"
    """Was ready since this start; /readyz now fails (broker or database lost)."""
    BACKOFF = "backoff"
    """Exited on its own; a restart is scheduled."""
    FAILED = "failed"
    """Crashed more times in a row than allowed; not restarted."""
    STOPPING = "stopping"
    STOPPED = "stopped"


RUNNING = frozenset({Phase.STARTING, Phase.READY, Phase.UNREADY, Phase.STOPPING})


@dataclass
class ChildStatus:
    """One child's life across restarts, as `sagaline up` shows it."""

    spec: ChildSpec
    backoff: Backoff = field(default_factory=Backoff)
    max_failures: int | None = None
    """Crashes in a row at which the child is given up (None: restart forever)."""

    phase: Phase = Phase.PENDING
    pid: int | None = None
    restarts: int = 0
    failures: int = 0
    """Crashes in a row; reset when a run lasts `backoff.reset_after` seconds."""
    started_at: float | None = None
    restart_at: float | None = None
    last_exit: int | None = None
    last_error: str = ""
    """What the last crash left in the log; kept across restarts so the table can show it."""
    detail: str = ""
    stop_exit: int | None = None
    """Exit status of the run that was asked to stop (None: nothing was running)."""
    killed: bool = False
    """True when stopping needed SIGKILL."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.phase in RUNNING

    def should_start(self, now: float) -> bool:
        if self.phase is Phase.PENDING:
            return True
        return (
            self.phase is Phase.BACKOFF and self.restart_at is not None and now >= self.restart_at
        )

    def started(self, pid: int, now: float) -> None:
        if self.phase is Phase.BACKOFF:
            self.restarts += 1
        self.phase = Phase.STARTING
        self.pid = pid
        self.started_at = now
        self.restart_at = None
        self.detail = ""

    def start_failed(self, reason: str, now: float) -> None:
        """The process could not even be spawned (e.g. the interpreter is gone): like a crash."""
        self._crashed(now, ran_for=0.0)
        self.detail = self.last_error = reason

    def probed(self, ready: bool, detail: str = "") -> None:
        """Record a /readyz answer. A late answer for a child that exited meanwhile is ignored."""
        if self.phase not in (Phase.STARTING, Phase.READY, Phase.UNREADY):
            return
        if ready:
            self.phase = Phase.READY
            self.last_error = ""  # recovered: the old crash is no longer the news
        elif self.phase is Phase.READY:
            self.phase = Phase.UNREADY
        self.detail = "" if ready else detail

    def exited(self, returncode: int, now: float, detail: str = "") -> None:
        self.last_exit = returncode
        self.pid = None
        if self.phase is Phase.STOPPING:
            self.phase = Phase.STOPPED
            self.stop_exit = returncode
            self.detail = detail if not is_clean_exit(returncode) else ""
            return
        ran_for = now - self.started_at if self.started_at is not None else 0.0
        self._crashed(now, ran_for)
        self.detail = self.last_error = detail

    def _crashed(self, now: float, ran_for: float) -> None:
        self.pid = None
        self.failures = 1 if ran_for >= self.backoff.reset_after else self.failures + 1
        if self.max_failures is not None and self.failures >= self.max_failures:
            self.phase = Phase.FAILED
            self.restart_at = None
            return
        self.phase = Phase.BACKOFF
        self.restart_at = now + self.backoff.delay(self.failures)

    def stop_requested(self) -> bool:
        """Enter stopping; True when there is a running process to signal."""
        if self.running:
            self.phase = Phase.STOPPING
            return True
        if self.phase is not Phase.FAILED:
            self.phase = Phase.STOPPED
        self.restart_at = None
        return False


def clean_stop(children: list[ChildStatus]) -> bool:
    """Every child stopped on request, in time, and with a clean exit status.

    Crashes before the stop are history shown in the table; they do not make the stop unclean.
    A child that was given up (FAILED) does.
    """
    return all(
        child.phase is Phase.STOPPED
        and not child.killed
        and (child.stop_exit is None or is_clean_exit(child.stop_exit))
        for child in children
    )
