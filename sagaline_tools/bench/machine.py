"""The machine a run measured: cores, memory, CPU, Python and the servers' versions."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def cpu_model(cpuinfo: str) -> str | None:
    """The first `model name` of /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return None


def memory_total_bytes(meminfo: str) -> int | None:
    """MemTotal of /proc/meminfo text, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                factor = 1024 if unit == "kb" else 1
                return int(parts[1]) * factor
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def local_machine() -> dict[str, Any]:
    memory = memory_total_bytes(_read("/proc/meminfo"))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "hostname": platform.node(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "cpu_model": cpu_model(_read("/proc/cpuinfo")) or platform.processor() or None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "aio_pika": _version("aio-pika"),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
    }


def summary_line(machine: Mapping[str, Any]) -> str:
    """One line for under the table."""
    parts = [
        f"{machine.get('cores')} cores",
        f"{machine.get('memory_gib')} GiB",
        str(machine.get("cpu_model") or "unknown CPU"),
        f"Python {machine.get('python')}",
        f"RabbitMQ {machine.get('rabbitmq') or '?'}",
        f"PostgreSQL {machine.get('postgresql') or '?'}",
    ]
    load = machine.get("load_average_at_start")
    if load:
        parts.append(f"load {load[0]} at start")
    return " · ".join(parts)
