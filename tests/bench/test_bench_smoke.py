"""`sagaline bench --quick`: every section runs end to end, the JSON has its shape, and the
run leaves nothing behind (processes, namespace, database). Tiny sizes: the figures are not
checked, only that each was measured; the real benchmark is run by hand (README, Performance).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.bench, pytest.mark.e2e, pytest.mark.timeout(180)]

FIGURES = [
    "baseline_msgs_per_s",
    "two_hop_msgs_per_s",
    "minimal_transitions_per_s",
    "orchestrator_transitions_per_s",
    "e2e_sagas_per_s",
    "e2e_growth_1_sagas_per_s",
    "latency_relay_p99_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "scale_transitions_per_s",
    "timers_all_fired_seconds",
]
SECTIONS = ["baseline", "minimal", "orchestrator", "e2e", "latency", "scale", "timers"]


@pytest.fixture(scope="module")
def quick_run(
    service_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    amqp, database = service_urls
    out = tmp_path_factory.mktemp("bench") / "bench-results.json"
    env = {**os.environ, "AMQP_URL": amqp, "DATABASE_URL": database, "SAGALINE_DEBUG": "1"}
    command = [
        sys.executable,
        "-m",
        "sagaline_tools.cli",
        "bench",
        "--quick",
        "--json-out",
        str(out),
    ]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            # Like Ctrl-C: the benchmark stops its processes and drops its database first.
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
            pytest.fail(f"bench --quick took over 150 s:\n{stderr[-3000:]}")
    completed = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "sagaline bench" in completed.stdout  # the table
    document = json.loads(Path(out).read_text())
    document["_stdout"] = completed.stdout
    return document


def test_every_figure_is_measured(quick_run: dict[str, Any]) -> None:
    assert quick_run["schema"] == "sagaline-bench/1"
    assert quick_run["errors"] == {}
    assert [f["key"] for f in quick_run["figures"]] == FIGURES
    for figure in quick_run["figures"]:
        assert isinstance(figure["value"], int | float), figure
        assert figure["value"] > 0, figure
        assert figure["status"] in ("pass", "fail", "n/a"), figure
        assert figure["label"] in quick_run["_stdout"]
    assert list(quick_run["results"]) == SECTIONS


def test_results_hold_the_raw_measurements(quick_run: dict[str, Any]) -> None:
    results = quick_run["results"]
    sizes = quick_run["config"]["sizes"]
    assert results["baseline"]["messages"] == sizes["messages"]
    assert results["minimal"]["completed"] == sizes["orders"]
    assert results["orchestrator"]["completed"] == sizes["orders"]
    assert [r["completed"] for r in results["e2e"]["growth"]] == sizes["e2e_orders"]
    assert results["e2e"]["growth"][0]["planner"]["autovacuum"] in ("on", "off")
    assert results["e2e"]["monitoring"]["polls"] >= 1
    assert results["latency"]["count"] >= 1
    # Half load is half of what the orchestrator alone did at the start of the round.
    latency = results["latency"]
    assert latency["orchestrator_alone_per_s"] > 0
    assert latency["offered_transitions_per_s"] == latency["orchestrator_alone_per_s"] / 2
    # When each side's slowest 1% arrived (a stall piles it into a second or two).
    for side in (latency, latency["relay"]):
        assert 1 <= side["tail_spread"]["seconds"] <= side["tail_spread"]["of_seconds"]
    assert results["latency"]["relay"]["count"] >= 1
    # The relay's copies are answered back to it, as the stub worker answers the commands.
    assert "echo" in results["latency"]["relay"]["cpu_cores"]
    assert results["latency"]["relay"]["messages"] % 3 == 0  # three copies per loop of four
    assert "totals_ms" not in results["latency"]["relay"]  # per-message lists stay out
    assert "totals_ms" not in results["latency"]
    assert set(results["latency"]["stages_p50_ms"]) == {
        "wait",
        "parse",
        "transaction",
        "ack",
        "claim",
        "confirm",
    }
    assert results["scale"]["finished"] == sizes["finished"]
    assert results["scale"]["table_rows"]["instances"] >= sizes["finished"] + sizes["live"]
    timers = results["timers"]
    assert timers["fired_once"] is True
    assert timers["sagas_fired"] == sizes["timers"]
    machine = quick_run["machine"]
    assert machine["cores"] >= 1
    assert machine["rabbitmq"]
    assert machine["postgresql"]


def test_the_run_left_nothing_behind(
    quick_run: dict[str, Any],
    service_urls: tuple[str, str],
) -> None:
    import asyncio

    run_id = quick_run["config"]["run_id"]
    amqp, database = service_urls

    async def leftovers() -> tuple[bool, bool]:
        admin = make_url(database).set(drivername="postgresql", database="postgres")
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
        try:
            db_left = await conn.fetchval(
                "SELECT count(*) FROM pg_database WHERE datname = $1", f"sagaline_bench_{run_id}"
            )
        finally:
            await conn.close()
        connection = await aio_pika.connect(amqp)
        try:
            channel = await connection.channel()
            try:
                await channel.declare_queue(f"bench{run_id}.orchestrator", passive=True)
                queue_left = True
            except aio_pika.exceptions.ChannelClosed:
                queue_left = False
        finally:
            await connection.close()
        return bool(db_left), queue_left

    assert asyncio.run(leftovers()) == (False, False)
