"""sagaline bench: machine description and CPU accounting from /proc text."""

from __future__ import annotations

import pytest

from sagaline_tools.bench import cpu
from sagaline_tools.bench.machine import cpu_model, local_machine, memory_total_bytes, summary_line

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
processor\t: 1
model name\t: AMD EPYC 7B13
"""
MEMINFO = "MemTotal:       24684196 kB\nMemFree:        22000000 kB\n"


def test_cpu_model_and_memory_from_proc_text() -> None:
    assert cpu_model(CPUINFO) == "AMD EPYC 7B13"
    assert cpu_model("processor : 0\n") is None
    assert memory_total_bytes(MEMINFO) == 24684196 * 1024
    assert memory_total_bytes("") is None


def test_local_machine_names_what_the_report_needs() -> None:
    machine = local_machine()
    assert {"cores", "memory_gib", "cpu_model", "python"} <= set(machine)
    assert isinstance(machine["cores"], int)


def test_summary_line() -> None:
    line = summary_line(
        {"cores": 2, "memory_gib": 23.5, "cpu_model": "X", "python": "3.11.7",
         "rabbitmq": "3.10.8", "postgresql": "15.2", "load_average_at_start": [0.5, 1, 1]}
    )  # fmt: skip
    assert line == (
        "2 cores · 23.5 GiB · X · Python 3.11.7 · RabbitMQ 3.10.8 · PostgreSQL 15.2 · "
        "load 0.5 at start"
    )


def test_parse_stat_survives_names_with_spaces_and_parentheses() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    name, seconds = cpu.parse_stat(f"1234 (py (x) thing) {' '.join(fields)}")
    assert name == "py (x) thing"
    assert seconds == pytest.approx(300 / cpu._TICKS)


def test_parse_system_counts_idle_and_iowait_as_not_busy() -> None:
    busy, total = cpu.parse_system("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert busy == pytest.approx(150 / cpu._TICKS)
    assert total == pytest.approx(1000 / cpu._TICKS)


def test_parse_steal_reads_the_eighth_value_of_the_cpu_line() -> None:
    assert cpu.parse_steal("cpu  100 0 50 800 50 0 0 30 0 0\n") == pytest.approx(30 / cpu._TICKS)
    assert cpu.parse_steal("cpu  100 0 50 800\n") is None


def test_usage_reports_stolen_cores_apart_from_other() -> None:
    before = cpu.CpuSnapshot({1: ("orchestrator", 10.0)}, busy=100.0, total=200.0, steal=4.0)
    after = cpu.CpuSnapshot({1: ("orchestrator", 11.0)}, busy=103.0, total=204.0, steal=4.6)
    assert cpu.usage(before, after, 2.0) == {
        "orchestrator": 0.5,
        "other": 0.7,  # 1.5 cores busy: 0.5 ours, 0.3 stolen
        "steal": 0.3,
        "machine": 1.5,
    }


def test_usage_is_per_pid_and_never_negative() -> None:
    before = cpu.CpuSnapshot({1: ("orchestrator", 10.0), 2: ("postgresql", 5.0),
                              3: ("postgresql", 9.0)}, busy=100.0, total=200.0)  # fmt: skip
    # pid 3 (a backend) exited, pid 4 started meanwhile.
    after = cpu.CpuSnapshot({1: ("orchestrator", 12.0), 2: ("postgresql", 6.0),
                             4: ("postgresql", 0.5)}, busy=103.0, total=204.0)  # fmt: skip
    assert cpu.usage(before, after, 2.0) == {
        "orchestrator": 1.0,
        "postgresql": 0.75,
        "other": 0.0,
        "machine": 1.5,
    }
    busy = cpu.CpuSnapshot(after.by_pid, busy=103.9, total=204.0)
    assert cpu.usage(before, busy, 2.0)["other"] == 0.2  # 1.95 cores busy, ours 1.75
    assert cpu.usage(before, after, 0.0) == {}


NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue ... (header)
   0: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 31337 1
   1: 0100007F:1629 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 31338 1
   2: 0100007F:1628 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000   107        0 40000 1
"""


def test_listening_inodes_only_listeners_on_the_port() -> None:
    assert cpu.listening_inodes(NET_TCP, 5672) == {"31337"}
    assert cpu.listening_inodes(NET_TCP, 5673) == {"31338"}
    assert cpu.listening_inodes(NET_TCP, 5432) == set()


def test_parse_stat_parent() -> None:
    fields = ["S", "77"] + ["0"] * 9 + ["1", "2"] + ["0"] * 30
    assert cpu.parse_stat_parent(f"9 (postgres) {' '.join(fields)}")[2] == 77


def test_snapshot_counts_children_of_a_server_in_its_group() -> None:
    import os

    snap = cpu.snapshot({}, {os.getppid(): "parent"})
    assert snap.by_pid[os.getpid()][0] == "parent"


def test_snapshot_reads_this_process() -> None:
    import os

    snap = cpu.snapshot({"me": os.getpid()})
    assert snap.by_pid[os.getpid()][0] == "me"
    assert snap.total >= snap.busy > 0
