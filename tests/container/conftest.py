"""Fixtures for the container tests: podman ready (or a skip saying why), the cached base image,
sagaline's image built from the real Dockerfile once per session (its tag removed afterwards),
and the compose file as `docker-compose config` resolves it.

One run at a time per machine: the tests hold a lock on the container cache for the session,
so that removing the leftovers of a killed run never touches another run's containers.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.container import support

# Never copied into the build context: caches, environments, history (none of it is read by the
# Dockerfile; .dockerignore would drop most of it anyway).
_NOT_CONTEXT = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "__pycache__",
    "build",
    "dist",
    "node_modules",
    ".sagaline",
)

LOCK_WAIT_S = 900.0
"""Another run on this machine holds the lock at most this long (its cold build included)."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if support.FIGURES:
        terminalreporter.section("container figures")
        for line in support.FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def podman_ready() -> Iterator[str]:
    """podman usable with deploy/container's settings, this run holding the machine's lock.
    Yields the storage driver in use."""
    reason = support.unavailable_reason()
    if reason is not None:
        pytest.skip(f"container tests: {reason}")
    cache = support.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "tests.lock").open("w") as lock:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another container test run held the lock for {LOCK_WAIT_S} s")
                time.sleep(1)
        # Leftovers of a run that was killed before its cleanup (we hold the lock: none is live).
        support.remove_leftovers()
        yield support.storage_driver()


@pytest.fixture(scope="session")
def base_image(podman_ready: str) -> str:
    """Debian bookworm with python3, built once per machine and kept (deploy/container)."""
    started = time.monotonic()
    result = support.run_tool([str(support.BASE_IMAGE)], timeout=support.BUILD_TIMEOUT_S)
    support.report(
        f"base image {result.stdout.strip()} ready in {time.monotonic() - started:.1f} s "
        f"(storage driver {podman_ready})",
    )
    return result.stdout.strip()


@pytest.fixture(scope="session")
def image(
    podman_ready: str,
    base_image: str,
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[support.BuiltImage]:
    """sagaline's image from the real Dockerfile, as a user builds it, with secrets about.

    The build context is a copy of the working tree (so that files can be planted in it) with a
    canary in the places secrets sit on a developer's machine: an .env file at the top and in a
    package, key and certificate files in packages; and the build runs with AMQP_URL,
    DATABASE_URL and a database password in its environment, as a developer's shell or CI has.
    """
    canary = f"canary{uuid.uuid4().hex}"
    context = tmp_path_factory.mktemp("context") / "sagaline"
    shutil.copytree(support.ROOT, context, ignore=_NOT_CONTEXT)
    planted = {
        ".env": f"SAGALINE_DB_PASSWORD_APP={canary}\n",
        "sagaline/.env": f"AMQP_URL=amqp://sagaline:{canary}@rabbitmq:5672/\n",
        "consumers/client.pem": f"-----BEGIN PRIVATE KEY-----\n{canary}\n",
        "orchestrator/tls.key": f"{canary}\n",
    }
    for path, text in planted.items():
        (context / path).write_text(text)
    build_env = {
        **os.environ,
        "AMQP_URL": f"amqp://sagaline:{canary}@127.0.0.1:5672/",
        "DATABASE_URL": f"postgresql://sagaline:{canary}@127.0.0.1:5432/sagaline",
        "SAGALINE_DB_PASSWORD_APP": canary,
    }
    name = f"{support.IMAGE_REPOSITORY}:{run_id}"
    started = time.monotonic()
    try:
        support.build_image(context, name, base_image, podman_ready, build_env)
        build_seconds = time.monotonic() - started
        support.report(f"built {name} in {build_seconds:.1f} s")
        yield support.BuiltImage(name=name, canary=canary, build_seconds=build_seconds)
    finally:
        support.remove_run(run_id)
        shutil.rmtree(context, ignore_errors=True)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml as `docker-compose config` resolves it (validated by that call)."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (bash .ci/run installs it with apt-get)")
    return support.compose_config()
