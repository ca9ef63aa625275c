"""Child processes of a run: started in their own session, stopped by pid, never left behind.

Each child gets its own process group (start_new_session), so a Ctrl-C in the terminal reaches
only the benchmark, which then stops its children in order; an atexit hook kills any group
still alive if the benchmark itself dies on the way out.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _kill_leftovers() -> None:
    for pid, popen in list(_LIVE.items()):
        if popen.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        _LIVE.pop(pid, None)


atexit.register(_kill_leftovers)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_line(stream: IO[bytes]) -> bytes:
    """One whole line, however long. The latency section's relay report (~70 kB) came back cut
    at 64 kB and 68 kB in two of three runs: a pipe left in non-blocking mode makes readline
    return what the pipe held so far; so read in blocking mode and until the newline or EOF."""
    os.set_blocking(stream.fileno(), True)
    line = stream.readline()
    while line and not line.endswith(b"\n"):
        more = stream.readline()
        if not more:
            break
        line += more
    return line


class ProcessFailed(RuntimeError):
    """A child exited early or never became ready; the message carries its log tail."""


@dataclass
class Child:
    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str]
    port: int | None = None
    """HTTP port of /readyz for sagaline processes; None for the benchmark's own helpers."""
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self, *, capture_stdout: bool = False) -> None:
        self._log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, *self.args],
            env=self.env,
            stdout=subprocess.PIPE if capture_stdout else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        _LIVE[self.popen.pid] = self.popen

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        if self.port is None:
            return self.running()
        try:
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ProcessFailed:
        return ProcessFailed(f"{self.name} {what} (log {self.log_path}):\n{self.log_tail()}")

    async def read_json_line(self, within: float) -> dict[str, Any]:
        """The next JSON line a helper prints on stdout (helpers report readiness and results)."""
        assert self.popen is not None
        assert self.popen.stdout is not None
        stdout = self.popen.stdout
        try:
            line = await asyncio.wait_for(asyncio.to_thread(_read_line, stdout), within)
        except TimeoutError:
            raise self.failure(f"did not report within {within:g}s") from None
        if not line:
            raise self.failure("exited without reporting")
        value = json.loads(line)
        if not isinstance(value, dict):
            raise self.failure("reported something other than a JSON object")
        return value

    async def stop(self, grace: float = 25.0) -> int | None:
        """SIGTERM, then SIGKILL to the whole group after `grace` seconds."""
        popen = self.popen
        if popen is None:
            return None
        try:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(popen.wait, grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(popen.pid, signal.SIGKILL)
                    await asyncio.to_thread(popen.wait, 10)
            return popen.returncode
        finally:
            _LIVE.pop(popen.pid, None)
            if popen.stdout is not None:
                popen.stdout.close()
            if self._log is not None:
                self._log.close()
                self._log = None


async def wait_ready(children: list[Child], deadline_s: float = 90.0) -> None:
    deadline = time.monotonic() + deadline_s
    pending = list(children)
    while pending:
        for child in list(pending):
            if not child.running():
                raise child.failure("exited early")
            if await asyncio.to_thread(child.ready):
                pending.remove(child)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise pending[0].failure(f"not ready within {deadline_s:g}s")
        await asyncio.sleep(0.1)
