"""Console scale benchmark: how long the console's pages take with 1M sagas and 100k parked.

    AMQP_URL=... DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m sagaline_tools.bench.console [--sagas 1000000] [--parked 100000]

In a database of its own (dropped afterwards unless --keep): every page is first timed on
empty tables (the baseline, same run), then the tables are seeded (finished and live order
sagas shaped by the engine, bench.seed; parked-index rows in 40 groups over four queues, one
in ten tied to a live saga), analyzed, and every page timed again: the median of five loads
after one warm-up, through the whole application (routing, session check, queries, template),
in process, so the figure is the server's time for the page. Goals (issue 17): the overview and
the dead-letter groups under 2 s, a page of 50 under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from sagaline.migrate import upgrade
from sagaline.settings import Settings
from sagaline_tools.bench.seed import due_in_future, order_templates, seed, vacuum_analyze
from sagaline_tools.console.accounts import Accounts
from sagaline_tools.console.app import build_app
from sagaline_tools.console.settings import ConsoleSettings

PASSWORD = "bench console password"
QUEUES = ("orchestrator", "payments", "inventory", "shipping")
REASONS = ("retries-exhausted", "schema-invalid", "unknown-saga", "malformed-json", "rejected")

PARKED_SQL = """
INSERT INTO console.parked (queue, message_key, replays, copies, message_id, correlation_id,
    saga_id, message_type, reason, fingerprint, error_pattern, error, original_queue, attempts,
    first_failed_at, last_failed_at, parked_at, size, headers, body, body_truncated)
SELECT $1 || '.' || ($2::text[])[1 + i % 4] || '.parking', k::text, 0, 1, k::text, s::text,
    CASE WHEN i % 10 = 0 THEN s END, 'ProcessPayment', ($3::text[])[1 + (i / 4) % 5],
    substr(md5((i % 40)::text), 1, 12), 'Error kind ' || (i % 40) || ': order <n> failed',
    'Error kind ' || (i % 40) || ': order ' || i || ' failed',
    $1 || '.' || ($2::text[])[1 + i % 4], 3, now()::text, now()::text,
    now() - (i || ' seconds')::interval, 200, '{"x-sagaline-attempt": 3}'::jsonb,
    convert_to(repeat('x', 200), 'UTF8'), false
FROM generate_series($4::int, $5::int) AS i,
    LATERAL (SELECT md5('parked' || i)::uuid AS k,
                    (SELECT id FROM saga.instances
                     WHERE business_key = 'bench-live-' || (1 + i % $6) AND workflow = 'order')
                    AS s) AS ids
"""


def _database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _seed(settings: Settings, sagas: int, parked: int, say: Callable[[str], None]) -> None:
    live_count = max(sagas // 10, 1)
    live, finished = order_templates()
    conn = await asyncpg.connect(_dsn(settings.database_url))
    try:
        topology = settings.topology
        say(f"seeding {sagas - live_count:,} finished sagas")
        await seed(conn, finished, topology, count=sagas - live_count,
                   key_prefix="bench-finished-", with_history=True)  # fmt: skip
        say(f"seeding {live_count:,} live sagas (with their timers)")
        await seed(conn, live, topology, count=live_count, key_prefix="bench-live-",
                   with_history=True, timer_due=due_in_future())  # fmt: skip
        say(f"seeding {parked:,} parked messages into the index")
        chunk = 20_000
        for start in range(1, parked + 1, chunk):
            end = min(start + chunk - 1, parked)
            await conn.execute(
                PARKED_SQL, settings.namespace, list(QUEUES), list(REASONS), start, end, live_count
            )
        say("vacuum analyze")
        await vacuum_analyze(conn)
        await conn.execute("VACUUM (ANALYZE) console.parked")
    finally:
        await conn.close()


def _pages(client: TestClient, settings: Settings) -> dict[str, str]:
    """The pages to time; ids come from the data (a live saga, one dead-letter group)."""
    parked_queue = f"{settings.namespace}.payments.parking"
    pages = {
        "overview": "/",
        "dead-letter groups": "/dlq",
        "parked messages, page of 50": "/dlq/messages",
        "parked messages of a queue and reason, page of 50":
            f"/dlq/messages?queue={parked_queue}&reason=retries-exhausted",
        "active sagas, page of 50": "/sagas?active=1",
        "all sagas, page of 50": "/sagas",
        "stuck sagas (1 min), page of 50": "/sagas?stuck=1m",
        "saga search by business key": "/sagas?key=bench-live-7",
        "due and future timers, page of 50": "/timers",
    }  # fmt: skip
    listing = client.get("/sagas?key=bench-live-7").text
    marker = 'href="/sagas/'
    if marker in listing:
        saga_id = listing.split(marker, 1)[1].split('"', 1)[0]
        pages["one saga's page"] = f"/sagas/{saga_id}"
    groups = client.get("/dlq").text
    marker = 'href="/dlq/messages?'
    if marker in groups:
        query = groups.split(marker, 1)[1].split('"', 1)[0].replace("&amp;", "&")
        pages["one dead-letter group, page of 50"] = f"/dlq/messages?{query}"
    return pages


def _time(client: TestClient, path: str, runs: int = 5) -> float:
    response = client.get(path)  # warm-up (and a check that the page works)
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        client.get(path)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _measure(settings: Settings) -> dict[str, float]:
    app = build_app(settings, ConsoleSettings(), background=False)
    with TestClient(app, base_url="https://testserver") as client:
        token = client.get("/login").cookies.get("sagaline_login_csrf") or ""
        client.post("/login", data={"name": "bench", "password": PASSWORD, "login_csrf": token})
        return {name: _time(client, path) for name, path in _pages(client, settings).items()}


GOALS = {"overview": 2.0, "dead-letter groups": 2.0}
PAGE_GOAL = 1.0


def report(empty: dict[str, float], full: dict[str, float], sagas: int, parked: int) -> str:
    lines = [
        f"console pages with {sagas:,} sagas ({sagas // 10:,} live) and {parked:,} parked "
        "(median of 5 loads, in process)",
        f"{'page':<52} {'empty':>9} {'seeded':>9} {'ratio':>7} {'goal':>6}  result",
    ]
    for name, seconds in full.items():
        goal = GOALS.get(name, PAGE_GOAL)
        base = empty.get(name)
        ratio = f"{seconds / base:6.1f}x" if base else "      -"
        base_text = f"{base * 1000:7.1f}ms" if base is not None else "        -"
        verdict = "met" if seconds < goal else "NOT MET"
        lines.append(
            f"{name:<52} {base_text} {seconds * 1000:7.1f}ms {ratio} {goal:5.1f}s  {verdict}"
        )
    return "\n".join(lines)


async def _prepare(settings: Settings) -> None:
    await upgrade(settings)
    from sagaline.db import create_unpooled_engine

    engine = create_unpooled_engine(settings.sqlalchemy_url)
    try:
        await Accounts(engine).add("bench", "viewer", PASSWORD)
    finally:
        await engine.dispose()


async def _drop(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(_dsn(_database(admin_url, "postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=1_000_000)
    parser.add_argument("--parked", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    parser.add_argument("--json-out", help="Also write the figures to this JSON file.")
    args = parser.parse_args(argv)
    base = Settings()
    name = f"sagaline_bench_console_{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(
        update={"database_url": _database(base.database_url, name), "namespace": "bench"}
    )

    def say(message: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    try:
        asyncio.run(_prepare(settings))
        say("timing the pages on empty tables (baseline)")
        empty = _measure(settings)
        started = time.monotonic()
        asyncio.run(_seed(settings, args.sagas, args.parked, say))
        say(f"seeded in {time.monotonic() - started:.0f} s; timing the pages")
        full = _measure(settings)
    finally:
        if not args.keep:
            asyncio.run(_drop(base.database_url, name))
    print(report(empty, full, args.sagas, args.parked))
    if args.json_out:
        figures: dict[str, Any] = {"sagas": args.sagas, "parked": args.parked,
                                   "empty_s": empty, "seeded_s": full}  # fmt: skip
        with open(args.json_out, "w") as out:
            json.dump(figures, out, indent=2)
    return 0 if all(full[n] < GOALS.get(n, PAGE_GOAL) for n in full) else 1


if __name__ == "__main__":
    sys.exit(main())
