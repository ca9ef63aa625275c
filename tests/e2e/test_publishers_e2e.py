"""The example publishers in examples/publishers/ (plain aio-pika, and Node.js with amqplib)
start all three workflows against real orchestrator and worker processes, and every saga
completes; publishing again with the same message id changes nothing; a bad event is parked with
its reason; the running orchestrator serves the contract they were written against."""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.topology import H_REASON, ParkReason
from sagaline.db import create_engine
from sagaline.settings import Settings
from tests.e2e.conftest import Process, System, _free_port
from tests.e2e.diagnostics import final_states

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "publishers"
PYTHON_PUBLISHER = EXAMPLES / "python" / "publish.py"
NODE_DIR = EXAMPLES / "node"
DEADLINE_S = 120.0
PUBLISH_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def system(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The orchestrator and every worker, started once for this module; stopped even on failure."""
    from consumers import WORKERS

    logs = tmp_path_factory.mktemp("publishers-e2e")
    value = System(settings)
    for name, args in [
        ("orchestrator", ["-m", "orchestrator"]),
        *((worker, ["-m", "consumers", worker]) for worker in WORKERS),
    ]:
        value.processes.append(Process(name, args, _free_port(), logs / f"{name}.log"))
    try:
        for process in value.processes:
            value.start(process)
        value.wait_ready()
        yield value
    finally:
        value.stop_all()


@pytest.fixture(scope="module")
def node_publisher(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`node publish.js` in a private copy of the example with its locked dependencies."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed here: the Node.js publisher example cannot run")
    npm = shutil.which("npm")
    assert npm is not None, "node is installed without npm: install npm to run the Node example"
    work = tmp_path_factory.mktemp("node-publisher")
    for name in ("package.json", "package-lock.json", "publish.js"):
        shutil.copy(NODE_DIR / name, work / name)
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert installed.returncode == 0, f"npm ci failed:\n{installed.stderr[-2000:]}"
    return [node, str(work / "publish.js")]


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    value = create_engine(settings, pool_size=2)
    yield value
    await value.dispose()


def publisher(language: str, request: pytest.FixtureRequest) -> list[str]:
    if language == "python":
        return [sys.executable, str(PYTHON_PUBLISHER)]
    command: list[str] = request.getfixturevalue("node_publisher")
    return command


def run_publisher(
    command: list[str],
    settings: Settings,
    tmp_path: Path,
    message_type: str,
    payload: dict[str, Any],
    *extra: str,
) -> dict[str, str]:
    """Publish like a user would: a payload file and the command line; the ids it printed."""
    source = tmp_path / f"{message_type}-{uuid.uuid4().hex[:6]}.json"
    source.write_text(json.dumps(payload))
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "AMQP_URL": settings.amqp_url,
        "SAGALINE_NAMESPACE": settings.namespace,
    }
    done = subprocess.run(
        [*command, message_type, str(source), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=PUBLISH_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ids: dict[str, str] = json.loads(done.stdout)
    assert ids["type"] == message_type
    return ids


def example_payload(message_type: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(
        (EXAMPLES / "payloads" / f"{message_type}.json").read_text()
    )
    return payload


async def seed(engine: AsyncEngine, skus: list[str], course_id: str) -> None:
    from consumers.courses.handlers import seed_course
    from consumers.inventory.handlers import seed_stock

    async with engine.begin() as conn:
        await seed_stock(conn, dict.fromkeys(skus, 100))
        await seed_course(conn, course_id, 10, title="Sagas 101", access_open=True)


def received_by_orchestrator(system: System) -> float:
    """Deliveries the orchestrator has settled so far (its batch-size histogram's sum)."""
    port = system.by_name("orchestrator").port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    for line in metrics.splitlines():
        if line.startswith('sagaline_batch_size_sum{consumer="orchestrator"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_received(system: System, at_least: float) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while received_by_orchestrator(system) < at_least:
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("language", ["python", "node"])
async def test_the_example_publishers_start_sagas_that_complete(
    language: str,
    request: pytest.FixtureRequest,
    system: System,
    settings: Settings,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    command = publisher(language, request)
    tag = f"{language}-{uuid.uuid4().hex[:8]}"
    order = example_payload("OrderSubmitted")
    order["order_id"] = f"order-{tag}"
    for line in order["lines"]:
        line["sku"] = f"{line['sku']}-{tag}"
    enrollment = example_payload("EnrollmentRequested") | {
        "user_id": f"user-{tag}",
        "course_id": f"course-{tag}",
    }
    change = example_payload("DocumentChangeDetected") | {"document_id": f"doc-{tag}"}
    await seed(engine, [line["sku"] for line in order["lines"]], enrollment["course_id"])

    before = received_by_orchestrator(system)
    submitted = run_publisher(command, settings, tmp_path, "OrderSubmitted", order)
    # The same event again, as a publisher retrying after a lost confirm would send it.
    again = run_publisher(
        command,
        settings,
        tmp_path,
        "OrderSubmitted",
        order,
        "--message-id",
        submitted["message_id"],
        "--correlation-id",
        submitted["correlation_id"],
    )
    assert again == submitted
    order_saga = uuid.UUID(submitted["correlation_id"])
    # Ids the example makes are version 7 (time-ordered), as the README advises, and so are the
    # saga's commands' ids, derived from the saga id's time (contracts.ids).
    assert (order_saga.version, uuid.UUID(submitted["message_id"]).version) == (7, 7)
    assert await final_states(engine, {order_saga}, DEADLINE_S) == {order_saga: "completed"}
    # The event, its duplicate, and the three replies (payment, stock, shipment) were taken.
    await wait_received(system, before + 5)
    async with engine.connect() as conn:
        starts = await conn.scalar(
            text(
                "SELECT count(*) FROM saga.history"
                " WHERE saga_id = :id AND message_type = 'OrderSubmitted'"
            ),
            {"id": order_saga},
        )
        charges = await conn.scalar(
            text("SELECT count(*) FROM payments.ledger WHERE order_id = :o AND kind = 'charge'"),
            {"o": order["order_id"]},
        )
        commands = (
            (
                await conn.execute(
                    text("SELECT message_id FROM saga.outbox WHERE saga_id = :id"),
                    {"id": order_saga},
                )
            )
            .scalars()
            .all()
        )
    assert (starts, charges) == (1, 1)
    assert commands and all(c.bytes[:6] == order_saga.bytes[:6] for c in commands)

    enrolled = run_publisher(command, settings, tmp_path, "EnrollmentRequested", enrollment)
    detected = run_publisher(command, settings, tmp_path, "DocumentChangeDetected", change)
    sagas = {uuid.UUID(enrolled["correlation_id"]), uuid.UUID(detected["correlation_id"])}
    assert await final_states(engine, sagas, DEADLINE_S) == dict.fromkeys(sagas, "completed")


async def get_parked(settings: Settings, message_id: str) -> aio_pika.abc.AbstractIncomingMessage:
    """Take the parked copy of one message from the orchestrator's parking queue."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.topology.parking_queue("orchestrator"))
        async with asyncio.timeout(DEADLINE_S):
            while True:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.2)
                elif message.message_id == message_id:
                    await message.ack()
                    return message
                else:
                    await message.reject(requeue=True)
    finally:
        await connection.close()


async def test_a_bad_event_is_parked_with_its_reason(
    system: System, settings: Settings, tmp_path: Path
) -> None:
    command = [sys.executable, str(PYTHON_PUBLISHER)]
    order = example_payload("OrderSubmitted")
    del order["card_token"]
    ids = run_publisher(command, settings, tmp_path, "OrderSubmitted", order)
    parked = await get_parked(settings, ids["message_id"])
    assert parked.headers[H_REASON] == ParkReason.SCHEMA_INVALID.value
    assert "payload.card_token: missing" in str(parked.headers["x-sagaline-error"])


def test_the_running_orchestrator_serves_its_contract(system: System, settings: Settings) -> None:
    base = f"http://127.0.0.1:{system.by_name('orchestrator').port}"
    with urllib.request.urlopen(f"{base}/asyncapi.json", timeout=5) as response:
        document = json.loads(response.read())
    assert document["x-sagaline-publishing"]["exchange"] == f"{settings.namespace}.events"
    with urllib.request.urlopen(f"{base}/schemas/OrderSubmitted.json", timeout=5) as response:
        schema = json.loads(response.read())
    body = {
        "message_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
        "type": "OrderSubmitted",
        "occurred_at": "2026-12-04T09:30:00Z",
        "payload": example_payload("OrderSubmitted"),
    }
    Draft202012Validator(schema).validate(body)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/schemas/NoSuchType.json", timeout=5)
    assert missing.value.code == 404
    assert "no schema of that name" in json.loads(missing.value.read())["error"]


def test_the_python_example_imports_nothing_of_sagaline() -> None:
    tree = ast.parse(PYTHON_PUBLISHER.read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    assert imported - set(sys.stdlib_module_names) == {"aio_pika"}
