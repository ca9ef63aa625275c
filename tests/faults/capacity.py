"""Per-saga costs for the README's capacity model: CPU seconds per order saga in each sagaline
process, in RabbitMQ and in PostgreSQL, WAL and table bytes per saga.

    .venv/bin/python -m tests.faults.capacity [ORDERS [--burst]]    # default 3000, paced

Paced: the orders are published one confirmed publish after the other (about 90/s here), a
steady load under the machine's capacity. --burst: all at once, so the processes run full
batches, the regime capacity is about.

A private RabbitMQ node and a private PostgreSQL (tests/faults/private.py; full_page_writes on,
fsync off, synchronous_commit on) serve only this run, so every CPU second counted on them is
this workload's, even while other work shares the machine; the sagaline processes are the
fault suite's (one orchestrator, the three order workers). After a warm-up, a burst of orders
(all of the kind that completes) is published and run to its end; CPU is read from /proc for
each process tree before and after. CPU per saga is what sizes a deployment: unlike a rate, it
barely moves when the machine is shared. Run as root, PostgreSQL runs as `postgres`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from sagaline.db import create_engine
from sagaline.settings import Settings
from sagaline_tools.bench.cpu import parse_stat_parent
from tests.conftest import own_database
from tests.faults.checker import wait_for_end
from tests.faults.conftest import BASE_ENV
from tests.faults.harness import Harness
from tests.faults.private import PrivatePostgres, PrivateRabbit
from tests.faults.workload import SUCCESS, Shop, Workload

WARM_UP = 300
SCHEMAS = ("saga", "payments", "inventory", "shipping")


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its descendants (live ones)."""
    stats: dict[int, tuple[float, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            _, seconds, ppid = parse_stat_parent((entry / "stat").read_text())
        except (OSError, ValueError):
            continue
        stats[int(entry.name)] = (seconds, ppid)
    children: dict[int, list[int]] = {}
    for pid, (_, ppid) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0.0, 0))[0]
        todo.extend(children.get(pid, []))
    return total


def postmaster_pid(pg: PrivatePostgres) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


async def measure(orders: int, concurrent: bool) -> None:
    rabbit = PrivateRabbit.create()
    pg = await asyncio.to_thread(PrivatePostgres.create)
    try:
        await rabbit.start()
        await pg.start(full_page_writes="on")
        base = Settings(amqp_url=rabbit.amqp_url, database_url=pg.url("postgres"))
        async with own_database(base, namespace=f"capacity{os.getpid()}") as settings:
            await run(settings, rabbit, pg, orders, concurrent)
    finally:
        await rabbit.destroy()
        await pg.destroy()


async def run(
    settings: Settings, rabbit: PrivateRabbit, pg: PrivatePostgres, n: int, concurrent: bool
) -> None:
    engine = create_engine(settings, pool_size=2)
    logs = Path(tempfile.mkdtemp(prefix="sagaline-capacity-"))
    harness = Harness(settings, logs, base_env={**BASE_ENV, "SAGALINE_LOG_LEVEL": "WARNING"})
    workload = Workload(f"cap{os.getpid()}")
    try:
        await workload.seed(engine)
        harness.add_orchestrators()
        harness.add_workers()
        poll = {"SAGALINE_RELAY_POLL_SECONDS": "1"}  # the default, not the suite's 10 minutes
        await harness.start_all(env=dict.fromkeys(harness.names, poll))
        async with Shop(settings) as shop:
            warm = workload.make(WARM_UP, [SUCCESS])
            await shop.send(warm)
            await wait_for_end(engine, warm, 300)
            roots = {name: harness.pid(name) for name in harness.names}
            assert rabbit.server is not None
            roots["rabbitmq"] = rabbit.server.pid
            roots["postgresql"] = postmaster_pid(pg)
            before = {name: tree_cpu(pid) for name, pid in roots.items()}
            wal_before = await scalar(engine, "SELECT pg_current_wal_lsn()::text")
            began = time.monotonic()
            burst = workload.make(n, [SUCCESS])
            if concurrent:  # all at once: the processes run full batches (saturation)
                for start in range(0, n, 500):
                    chunk = burst[start : start + 500]
                    await asyncio.gather(*(shop.publish(o.submitted) for o in chunk))
            else:  # one confirmed publish after the other: a steady, lighter load
                await shop.send(burst)
            await wait_for_end(engine, burst, 900)
            seconds = time.monotonic() - began
            after = {name: tree_cpu(pid) for name, pid in roots.items()}
            wal = await scalar(
                engine, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{wal_before}')::bigint"
            )
        await report(engine, n, seconds, before, after, int(wal), WARM_UP + n)
    finally:
        await harness.stop_all()
        await engine.dispose()


async def scalar(engine: object, sql: str) -> Any:
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        return await conn.scalar(text(sql))


async def report(
    engine: object,
    n: int,
    seconds: float,
    before: dict[str, float],
    after: dict[str, float],
    wal: int,
    sagas: int,
) -> None:
    print(f"{n} order sagas in {seconds:.1f} s ({n / seconds:.0f}/s on this machine, shared)")
    transitions = int(str(await scalar(engine, "SELECT count(*) FROM saga.history")))
    print(f"transitions per saga: {transitions / sagas:.2f}")
    print("CPU per saga (ms):")
    total = 0.0
    for name in before:
        ms = (after[name] - before[name]) * 1000 / n
        total += ms
        print(f"  {name:16} {ms:6.2f}")
    print(f"  {'all':16} {total:6.2f}")
    print(f"WAL per saga: {wal / n / 1024:.1f} kB")
    print("bytes per finished saga, table + indexes + TOAST (of which indexes):")
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(
            text(
                "SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid),"
                " pg_indexes_size(c.oid)"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(:schemas) ORDER BY 1"
            ),
            {"schemas": list(SCHEMAS)},
        )
        for table, size, indexes in rows:
            print(f"  {table:28} {size / sagas:8.0f}  (indexes {indexes / sagas:6.0f})")


if __name__ == "__main__":
    asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3000, "--burst" in sys.argv[2:]))
