"""The process side of `sagaline up`: spawn, reap, probe, restart, stop.

Decisions (when to restart, what counts as a clean stop) live in `supervisor.py`; this loop only
performs them. Children share the terminal's process group, so a Ctrl-C reaches them too: the
SIGTERM we send afterwards is harmless (uvicorn treats a second signal other than SIGINT as the
same request), and a second Ctrl-C escalates to SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from sagaline_tools.cli.supervisor import ChildSpec, ChildStatus, Phase, clean_stop, is_clean_exit

Probe = Callable[[ChildSpec], Awaitable[tuple[bool, str]]]
OnChange = Callable[[list[ChildStatus]], None]


def _probe_sync(url: str, timeout: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, ""
    except urllib.error.HTTPError as exc:
        # /readyz answers 503 with the problems ("broker unreachable; database unreachable").
        body = exc.read(300).decode("utf-8", errors="replace").strip()
        return False, body or f"HTTP {exc.code}"
    except (OSError, ValueError):
        return False, "not answering on /readyz yet"


async def http_probe(spec: ChildSpec, within: float = 1.0) -> tuple[bool, str]:
    url = f"http://127.0.0.1:{spec.port}/readyz"
    return await asyncio.to_thread(_probe_sync, url, within)


_MODULE_PREFIX = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=\w+:)")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Refused|Denied)\b.*:")


def last_log_line(path: Path, max_bytes: int = 8192) -> str:
    """What a child died of: the last exception line of its log, else its last line.

    A traceback ends with "SomeError: message", but servers often log a line or two after it
    ("Application startup failed. Exiting."); the exception says more.
    """
    try:
        with path.open("rb") as file:
            file.seek(0, 2)
            size = file.tell()
            file.seek(max(0, size - max_bytes))
            tail = file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    # Only this run's lines: each start writes a "--- <time> starting:" header.
    starts = [i for i, line in enumerate(lines) if line.startswith("--- ")]
    lines = lines[starts[-1] + 1 :] if starts else lines
    if not lines:
        return ""
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    if errors:
        # "aiormq.exceptions.ChannelPreconditionFailed: ..." -> "ChannelPreconditionFailed: ..."
        return _MODULE_PREFIX.sub("", errors[-1])[:300]
    return lines[-1][:300]


class Runner:
    def __init__(
        self,
        children: list[ChildStatus],
        *,
        env: Mapping[str, str],
        log_dir: Path,
        stop_timeout: float,
        probe: Probe = http_probe,
        on_change: OnChange = lambda _: None,
        tick: float = 0.25,
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = children
        self.env = dict(env)
        self.log_dir = log_dir
        self.stop_timeout = stop_timeout
        self.probe = probe
        self.on_change = on_change
        self.tick = tick
        self.probe_interval = probe_interval
        self.clock = clock
        self.gave_up: list[ChildStatus] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    def log_path(self, child: ChildStatus) -> Path:
        return self.log_dir / f"{child.name}.log"

    def request_stop(self) -> None:
        """First call: graceful stop. Second call (an impatient Ctrl-C): kill now."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    async def run(self) -> bool:
        """Supervise until asked to stop or a child is given up; True if all stopped cleanly."""
        probing: asyncio.Task[None] | None = None
        next_probe = 0.0
        try:
            while not self._stop.is_set():
                now = self.clock()
                self._reap(now)
                self.gave_up = [c for c in self.children if c.phase is Phase.FAILED]
                if self.gave_up:
                    break
                for child in self.children:
                    if child.should_start(now):
                        self._spawn(child, now)
                if now >= next_probe and (probing is None or probing.done()):
                    probing = asyncio.create_task(self._probe_all())
                    next_probe = now + self.probe_interval
                self.on_change(self.children)
                await _wait(self._stop, self.tick)
        finally:
            if probing is not None:
                probing.cancel()
            await self._shutdown()
        return clean_stop(self.children)

    async def _probe_all(self) -> None:
        running = [
            c for c in self.children if c.phase in (Phase.STARTING, Phase.READY, Phase.UNREADY)
        ]
        results = await asyncio.gather(*(self.probe(c.spec) for c in running))
        for child, (ready, detail) in zip(running, results, strict=True):
            child.probed(ready, detail)

    def _spawn(self, child: ChildStatus, now: float) -> None:
        env = {**self.env, "SAGALINE_HTTP_PORT": str(child.spec.port), "PYTHONUNBUFFERED": "1"}
        path = self.log_path(child)
        try:
            with path.open("ab") as log:
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                log.write(f"\n--- {stamp} starting: {' '.join(child.spec.argv)}\n".encode())
                log.flush()
                proc = subprocess.Popen(
                    child.spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        except OSError as exc:
            child.start_failed(f"cannot start: {exc}", now)
            return
        self._procs[child.name] = proc
        child.started(proc.pid, now)

    def _reap(self, now: float) -> None:
        for child in self.children:
            proc = self._procs.get(child.name)
            if proc is None:
                continue
            returncode = proc.poll()
            if returncode is None:
                continue
            del self._procs[child.name]
            detail = "" if is_clean_exit(returncode) else last_log_line(self.log_path(child))
            child.exited(returncode, now, detail)

    async def _shutdown(self) -> None:
        for child in self.children:
            if child.stop_requested():
                self._signal(child, kill=False)
        deadline = self.clock() + self.stop_timeout
        while self._procs and self.clock() < deadline and not self._force.is_set():
            self._reap(self.clock())
            self.on_change(self.children)
            await _wait(self._force, self.tick)
        for child in self.children:
            if child.name in self._procs and self._procs[child.name].poll() is None:
                self._signal(child, kill=True)
                child.killed = True
        # After SIGKILL the kernel ends them at once; wait briefly so none is left a zombie.
        kill_deadline = self.clock() + 5.0
        while self._procs and self.clock() < kill_deadline:
            self._reap(self.clock())
            await asyncio.sleep(0.05)
        self.on_change(self.children)

    def _signal(self, child: ChildStatus, *, kill: bool) -> None:
        proc = self._procs.get(child.name)
        if proc is None:
            return
        try:
            if kill:
                proc.kill()
            else:
                proc.terminate()
        except ProcessLookupError:  # exited between poll and signal; reaped next round
            pass


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep up to `seconds`, waking early when the event is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
