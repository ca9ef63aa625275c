"""Where the CPU went during a measurement: our processes, PostgreSQL, RabbitMQ, the rest.

Read from /proc (Linux), which is enough to tell what bounds a figure on a 2-core box: if
the orchestrator used ~1 core while the machine was busy, it is the orchestrator's Python;
if the machine idled, something waits (disk sync, batching timers, a lock).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat(text: str) -> tuple[str, float]:
    """(command name, user+system CPU seconds) from /proc/<pid>/stat text."""
    # The name is in parentheses and may itself contain spaces or parentheses.
    start, end = text.index("("), text.rindex(")")
    name = text[start + 1 : end]
    fields = text[end + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return name, (utime + stime) / _TICKS


def parse_stat_parent(text: str) -> tuple[str, float, int]:
    """(command name, CPU seconds, parent pid) from /proc/<pid>/stat text."""
    name, seconds = parse_stat(text)
    ppid = int(text[text.rindex(")") + 2 :].split()[1])
    return name, seconds, ppid


def _all_cores(text: str) -> list[int]:
    """The clock ticks of /proc/stat's "cpu" line (all cores): user, nice, system, idle,
    iowait, irq, softirq, steal, ..."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            return [int(v) for v in line.split()[1:]]
    raise ValueError("no cpu line")


def parse_system(text: str) -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores from /proc/stat text."""
    values = _all_cores(text)
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICKS, total / _TICKS


def parse_steal(text: str) -> float | None:
    """CPU seconds the hypervisor gave to other guests while ours had work ("steal", the
    eighth value of the cpu line), or None where the kernel does not report it."""
    values = _all_cores(text)
    return values[7] / _TICKS if len(values) > 7 else None


def listening_inodes(proc_net_tcp: str, port: int) -> set[str]:
    """Socket inodes listening on `port`, from /proc/net/tcp(6) text."""
    inodes = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
            inodes.add(inode)
    return inodes


def _listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (the broker, the postmaster), if visible."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            inodes |= listening_inodes(Path(table).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(entry.name)
        except OSError:
            continue
    return None


def server_pids(ports: dict[str, int]) -> dict[int, str]:
    """group name -> port, resolved to the pids listening there (e.g. rabbitmq, postgresql)."""
    found = {}
    for group, port in ports.items():
        pid = _listener_pid(port)
        if pid is not None:
            found[pid] = group
    return found


@dataclass(frozen=True)
class CpuSnapshot:
    by_pid: dict[int, tuple[str, float]] = field(default_factory=dict)
    """pid -> (group, CPU seconds so far) for the processes of interest."""
    busy: float = 0.0
    total: float = 0.0
    steal: float | None = None
    """Of `busy`, the part stolen by the hypervisor (None: not reported)."""


def snapshot(named_pids: dict[str, int], servers: dict[int, str] | None = None) -> CpuSnapshot:
    """CPU seconds so far of each named pid, of each server pid and its children (PostgreSQL
    backends are children of the postmaster), and of the whole machine."""
    by_pid: dict[int, tuple[str, float]] = {}
    groups = {pid: name for name, pid in named_pids.items()}
    groups.update(servers or {})
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            _, seconds, ppid = parse_stat_parent((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        pid = int(entry.name)
        group = groups.get(pid) or (servers or {}).get(ppid)
        if group is not None:
            by_pid[pid] = (group, seconds)
    try:
        system = Path("/proc/stat").read_text()
        busy, total = parse_system(system)
        steal = parse_steal(system)
    except (OSError, ValueError):
        busy = total = 0.0
        steal = None
    return CpuSnapshot(by_pid, busy, total, steal)


def usage(before: CpuSnapshot, after: CpuSnapshot, wall_seconds: float) -> dict[str, float]:
    """Cores used on average per group over the interval, plus `other` (the rest), `steal`
    (where the kernel reports it) and `machine` (all cores busy, steal included).

    Per pid, so that a process that started meanwhile counts from zero; one that exited
    meanwhile (a short-lived PostgreSQL backend) is missing, never negative.
    """
    if wall_seconds <= 0:
        return {}
    groups: dict[str, float] = {}
    for pid, (group, seconds) in after.by_pid.items():
        previous = before.by_pid.get(pid)
        spent = seconds - previous[1] if previous is not None and previous[0] == group else seconds
        groups[group] = groups.get(group, 0.0) + max(0.0, spent)
    result = {group: round(spent / wall_seconds, 2) for group, spent in sorted(groups.items())}
    machine = (after.busy - before.busy) / wall_seconds
    stolen: float | None = None
    if before.steal is not None and after.steal is not None:
        # Time the VM wanted to run and the hypervisor ran another guest: every process here
        # was slower for it. A few tenths of a core of it explain a noisy run.
        stolen = max(0.0, after.steal - before.steal) / wall_seconds
    # Everything else: the benchmark's own polling, and whatever else runs on the box. More
    # than a few tenths of a core means the figure was measured on a busy machine.
    ours = sum(groups.values()) / wall_seconds
    result["other"] = round(max(0.0, machine - (stolen or 0.0) - ours), 2)
    if stolen is not None:
        result["steal"] = round(stolen, 2)
    result["machine"] = round(machine, 2)
    return result
