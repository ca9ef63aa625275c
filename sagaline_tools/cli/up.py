"""`sagaline up`: migrate, then run the orchestrator and every worker as supervised processes."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sagaline.settings import Settings
from sagaline_tools.cli import common
from sagaline_tools.cli.checks import check_broker
from sagaline_tools.cli.output import CliError, stdout
from sagaline_tools.cli.runner import Runner
from sagaline_tools.cli.supervisor import (
    Backoff,
    ChildSpec,
    ChildStatus,
    Phase,
    is_clean_exit,
    plan_children,
)

STOP_MARGIN_SECONDS = 5.0
"""Added to the children's graceful timeout before SIGKILL: their own shutdown needs a moment."""

_PHASE_STYLE = {
    Phase.PENDING: "dim",
    Phase.STARTING: "yellow",
    Phase.READY: "bold green",
    Phase.UNREADY: "red",
    Phase.BACKOFF: "red",
    Phase.FAILED: "bold red",
    Phase.STOPPING: "yellow",
    Phase.STOPPED: "dim",
}


def register(app: typer.Typer) -> None:
    app.command("up")(up)


def up(
    base_port: Annotated[
        int,
        typer.Option(
            "--base-port",
            "-p",
            min=1,
            max=65535,
            help="HTTP port of the orchestrator; each worker gets the next one.",
        ),
    ] = 8080,
    workers: Annotated[
        list[str] | None,
        typer.Option("--worker", "-w", help="Run only this worker (repeatable). Default: all."),
    ] = None,
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Upgrade the database schema first.")
    ] = True,
    max_failures: Annotated[
        int | None,
        typer.Option(
            "--max-failures",
            min=1,
            help="Give up (and stop everything) after a process crashes this many times in a "
            "row. Default: restart forever, with backoff up to 30 s.",
        ),
    ] = None,
    log_dir: Annotated[
        Path, typer.Option("--log-dir", help="Where each process's output goes (<name>.log).")
    ] = Path(".sagaline/logs"),
    console_port: Annotated[
        int,
        typer.Option(
            "--console-port", min=0, max=65535, help="Port of the operations console; 0: none."
        ),
    ] = 8090,
) -> None:
    """Run the orchestrator and every worker as separate processes until Ctrl-C or SIGTERM.

    Restarts a crashed process with backoff. On stop, sends SIGTERM to all, waits up to
    SAGALINE_GRACEFUL_TIMEOUT_SECONDS + 5 s, then SIGKILL. Exits 0 after a clean stop.
    """
    settings = common.load_settings()
    specs = _plan(workers, base_port)
    if console_port:
        specs.append(console_spec(console_port, specs))
    _check_ports_free(specs, settings.http_host)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create log directory {log_dir}: {exc.strerror or exc}") from None
    common.run(_preflight(settings, migrate))

    children = [ChildStatus(spec, backoff=Backoff(), max_failures=max_failures) for spec in specs]
    console = stdout()
    stop_timeout = settings.graceful_timeout_seconds + STOP_MARGIN_SECONDS
    console.print(
        f"starting {len(specs)} processes (namespace [bold]{settings.namespace}[/], "
        f"logs in {log_dir}/); Ctrl-C to stop"
    )
    if console_port:
        console.print(
            f"operations console: [bold]http://127.0.0.1:{console_port}/[/] "
            "(accounts: `sagaline operator add NAME --role admin`)"
        )
    runner = Runner(children, env=os.environ, log_dir=log_dir, stop_timeout=stop_timeout)
    if console.is_terminal:
        with Live(console=console, auto_refresh=False) as live:

            def refresh(current: list[ChildStatus]) -> None:
                table = render_table(current, time.monotonic(), console.width)
                live.update(table, refresh=True)

            runner.on_change = refresh
            clean = common.run(_supervise(runner))
    else:
        runner.on_change = ChangePrinter(console)
        clean = common.run(_supervise(runner))

    if runner.gave_up:
        names = ", ".join(
            f"{c.name} ({c.failures} crashes in a row; see {runner.log_path(c)})"
            for c in runner.gave_up
        )
        raise CliError(f"gave up on {names}; stopped everything")
    if not clean:
        raise CliError(f"stopped, but not cleanly: {_unclean(children, stop_timeout)}")
    console.print("[green]✓[/] all processes stopped")


def _plan(workers: list[str] | None, base_port: int) -> list[ChildSpec]:
    known = common.worker_names()
    chosen = tuple(dict.fromkeys(workers)) if workers else known
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise CliError(
            f"unknown worker {', '.join(unknown)}; known workers: {', '.join(known)}", exit_code=2
        )
    try:
        return plan_children(chosen, base_port)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None


def console_spec(port: int, others: list[ChildSpec]) -> ChildSpec:
    """The console on 127.0.0.1 (it has a login, but a trial need not face the network)."""
    taken = {spec.port: spec.name for spec in others}
    if port in taken:
        raise CliError(
            f"console port {port} is {taken[port]}'s; choose another with --console-port",
            exit_code=2,
        )
    argv = (sys.executable, "-m", "sagaline_tools.cli", "console", "--host", "127.0.0.1")
    return ChildSpec("console", (*argv, "--port", str(port)), port)


def _check_ports_free(specs: list[ChildSpec], host: str) -> None:
    """Fail before starting anything rather than let a child crash-loop on a taken port."""
    for spec in specs:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # Same option uvicorn sets, so a port in TIME_WAIT from a previous run counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, spec.port))
            except OSError as exc:
                reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise CliError(
                    f"port {spec.port} ({spec.name}) on {host} is {reason}; "
                    "choose another with --base-port",
                    exit_code=2,
                ) from None


async def _preflight(settings: Settings, migrate: bool) -> None:
    from sagaline_tools.cli.checks import check_database
    from sagaline_tools.cli.migrate import run_migrations

    await check_broker(settings)
    if migrate:
        result = await run_migrations(settings)
        stdout().print(f"[green]✓[/] database at revision [bold]{result['revision']}[/]")
    elif not await check_database(settings):
        raise CliError("the database does not exist; run `sagaline migrate` first")


async def _supervise(runner: Runner) -> bool:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, runner.request_stop)
    try:
        return await runner.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return ""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


def _detail(child: ChildStatus, now: float) -> str:
    if child.phase is Phase.BACKOFF and child.restart_at is not None:
        wait = max(0.0, child.restart_at - now)
        when = f"{wait:.1f}s" if wait < 10 else f"{wait:.0f}s"
        return f"restart in {when}" + (f" · {child.detail}" if child.detail else "")
    if child.killed:
        return "killed after the stop timeout"
    if child.phase is Phase.STARTING and child.last_error:
        return f"{child.detail} · last crash: {child.last_error}"
    return child.detail


_FIXED_COLUMNS_WIDTH = 72
"""Room the columns other than "detail" take, borders and padding included."""


def render_table(children: list[ChildStatus], now: float, width: int = 120) -> Table:
    table = Table(title="sagaline processes", caption="Ctrl-C to stop (twice to kill)")
    for name in ("process", "pid", "port", "state", "restarts", "last exit"):
        numeric = name in ("pid", "port", "restarts")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    table.add_column("detail", no_wrap=True)
    # Cut the free text to the room left: given an over-long cell, rich squeezes every column.
    detail_width = max(8, width - _FIXED_COLUMNS_WIDTH)
    for child in children:
        table.add_row(
            child.name,
            str(child.pid or ""),
            str(child.spec.port),
            Text(child.phase.value, style=_PHASE_STYLE[child.phase]),
            str(child.restarts),
            describe_exit(child.last_exit),
            _fit(_detail(child, now), detail_width),
        )
    return table


def _fit(text: str, width: int) -> Text:
    fitted = Text(text)
    fitted.truncate(width, overflow="ellipsis")
    return fitted


class ChangePrinter:
    """Without a terminal (CI, a log file) print one line per change instead of a live table."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seen: dict[str, tuple[Phase, int | None]] = {}

    def __call__(self, children: list[ChildStatus]) -> None:
        now = time.monotonic()
        for child in children:
            key = (child.phase, child.pid)
            if self.seen.get(child.name) == key:
                continue
            self.seen[child.name] = key
            parts = [f"pid {child.pid}" if child.pid else "", f"port {child.spec.port}"]
            if child.phase in (Phase.BACKOFF, Phase.FAILED, Phase.STOPPED):
                parts.append(describe_exit(child.last_exit))
            detail = _detail(child, now)
            stamp = datetime.now().strftime("%H:%M:%S")
            line = f"{stamp} {child.name:<14} {child.phase.value:<9} " + ", ".join(
                p for p in parts if p
            )
            self.console.print(line + (f" — {detail}" if detail else ""), soft_wrap=True)


def _unclean(children: list[ChildStatus], stop_timeout: float) -> str:
    problems = []
    for child in children:
        if child.killed:
            problems.append(f"{child.name} was killed after {stop_timeout:g}s")
        elif child.phase is Phase.FAILED:
            problems.append(f"{child.name} was given up")
        elif child.stop_exit is not None and not is_clean_exit(child.stop_exit):
            problems.append(f"{child.name} ended with {describe_exit(child.stop_exit)}")
    return "; ".join(problems) or "unknown"
