"""sagaline's image run as users run it: `sagaline migrate` as a one-shot container, then the
orchestrator, every worker and the console as containers (tests/container/deployment.py says
how they differ from compose), each ready and healthy; `sagaline demo order` from the image
drives orders through them to their expected states; SIGTERM stops every one cleanly within
compose's grace period. The tests run in order against one deployment."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy.engine import make_url

from sagaline.settings import Settings
from sagaline_tools.console.index import feed_queue
from tests.conftest import _drop_database, _with_database, delete_namespace
from tests.container import support
from tests.container.deployment import PASSED_THROUGH, Deployment, migrate, plan
from tests.container.support import BuiltImage, report

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

DEMO_ORDERS = 10
"""Two of each of the demo's five outcomes."""


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, support.Service]:
    return support.sagaline_services(compose)


@pytest.fixture(scope="module")
def deployment(
    image: BuiltImage,
    services: dict[str, support.Service],
    service_urls: tuple[str, str],
    run_id: str,
) -> Iterator[Deployment]:
    amqp, admin_db = service_urls
    database = f"sagaline_container_{run_id}"
    compose_env = services["orchestrator"].environment
    value = Deployment(
        image=image.name,
        run_id=run_id,
        env={
            "AMQP_URL": amqp,
            "DATABASE_URL": _with_database(admin_db, database),
            "SAGALINE_NAMESPACE": f"c{run_id}",
            # Host network: listen on loopback only, not on this machine's other addresses.
            "SAGALINE_HTTP_HOST": "127.0.0.1",
            **{key: compose_env[key] for key in PASSED_THROUGH},
        },
    )
    try:
        migrate(value, services)
        orchestrator, others = plan(services, value)
        # The orchestrator alone first, so that its start-up time is not shared with eight
        # other interpreters starting on the same CPUs.
        value.start(orchestrator)
        value.wait_ready([orchestrator.service])
        for container in others:
            value.start(container)
        value.wait_ready([c.service for c in others])
        yield value
    finally:
        support.remove_run_containers(run_id)
        settings = Settings(
            amqp_url=amqp, database_url=value.env["DATABASE_URL"], namespace=f"c{run_id}"
        )
        try:
            asyncio.run(_delete_broker_objects(settings))
        finally:
            asyncio.run(_drop_database(admin_db, database))


async def _delete_broker_objects(settings: Settings) -> None:
    """The namespace's queues and exchanges, and the console's feed queue beside them."""
    await delete_namespace(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(feed_queue(settings.topology), if_unused=False, if_empty=False)
    finally:
        await connection.close()


def test_migrate_runs_once_to_head(deployment: Deployment) -> None:
    result = deployment.migrate_result
    assert result["previous_revision"] is None  # a new database, created by migrate
    assert result["revision"] == result["head"]
    assert make_url(deployment.env["DATABASE_URL"]).database in result["database"]


def test_every_process_is_ready_and_healthy(deployment: Deployment) -> None:
    services = set(deployment.containers)
    assert {"orchestrator", "payments", "inventory", "shipping", "console"} <= services
    for container in deployment.containers.values():
        # The image's HEALTHCHECK (liveness, /healthz), run by podman inside the container.
        check = support.podman("healthcheck", "run", container.name, check=False)
        assert check.returncode == 0, f"{container.name}: {check.stdout}{check.stderr}"
        state = support.inspect("container", container.name)["State"]
        assert state["Health"]["Status"] == "healthy", container.name
        # Compose's health check (readiness, /readyz), run the same way compose runs it.
        assert container.compose_check is not None
        readiness = support.podman("exec", container.name, *container.compose_check, check=False)
        assert readiness.returncode == 0, f"{container.name}: {readiness.stderr}"
        # The process itself runs as the image's user, not root (rootful podman without a
        # user namespace: the container's ids are the host's).
        status = Path(f"/proc/{state['Pid']}/status").read_text()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
        assert uids is not None
        assert set(uids.group(1).split()) == {"10001"}, f"{container.name}: uid {uids.group(1)}"


def test_start_up_time_to_ready(deployment: Deployment, services: Any) -> None:
    orchestrator = deployment.containers["orchestrator"]
    assert orchestrator.ready_at is not None
    alone = orchestrator.ready_at - orchestrator.launched_at
    in_process = orchestrator.ready_at - support.started_at(orchestrator.name)
    others = [
        c.ready_at - c.launched_at
        for c in deployment.containers.values()
        if c is not orchestrator and c.ready_at is not None
    ]
    report(
        f"start-up to ready: orchestrator {alone:.1f} s from `podman run` "
        f"({in_process:.1f} s from the container's start); the other {len(others)} started "
        f"together: slowest {max(others):.1f} s"
    )
    # Compose's health check gives a process its start period before counting failures.
    start_period = services["orchestrator"].health_start_period_s
    assert alone < start_period, f"start-up {alone:.1f} s exceeds compose's start_period"


def test_demo_order_reaches_every_expected_state(deployment: Deployment) -> None:
    argv = ("sagaline", "demo", "order", "--count", str(DEMO_ORDERS), "--timeout", "120", "--json")
    result = deployment.run(argv, name=deployment.container_name("demo"))
    assert result.stdout, f"demo printed nothing (exit {result.returncode}):\n{result.stderr}"
    summary = json.loads(result.stdout)
    wrong = [o for o in summary["orders"] if o["state"] != o["expected_state"]]
    assert not wrong, f"sagas not in their expected state: {wrong}"
    assert summary["count"] == DEMO_ORDERS
    assert summary["ok"] is True
    assert result.returncode == 0
    # Every outcome of the demo's mix, each ending in its own final state.
    assert len({o["scenario"] for o in summary["orders"]}) == 5


def test_sigterm_stops_every_container_cleanly(
    deployment: Deployment, services: dict[str, support.Service]
) -> None:
    grace = min(s.stop_grace_s or 10.0 for s in services.values() if s.long_running)
    names = [c.name for c in deployment.containers.values()]
    started = time.monotonic()
    # podman stop sends the image's stop signal (SIGTERM), then SIGKILL after --time.
    support.podman("stop", "--time", str(int(grace)), *names, timeout=grace + 60)
    elapsed = time.monotonic() - started
    report(f"{len(names)} containers stopped by SIGTERM in {elapsed:.1f} s (grace {grace:.0f} s)")
    for container in deployment.containers.values():
        state = support.inspect("container", container.name)["State"]
        logs = deployment.logs(container, lines=200)
        assert state["ExitCode"] == 0, f"{container.name} exited {state['ExitCode']}:\n{logs}"
        assert not re.search(r"^Traceback", logs, re.M), f"{container.name}:\n{logs}"
    assert elapsed < grace
