"""sagaline deployed as containers of its image, the way docker-compose.yml deploys it, on this
machine's RabbitMQ and PostgreSQL (host network): each compose service that runs sagaline's
image becomes one container with that service's command, on a database and a broker namespace
of this run's own.

Differences from compose, all forced by the host network and the shared local services: each
process gets its own SAGALINE_HTTP_PORT (compose gives each container 8080 in its own network);
the connection URLs are this machine's; the sender checks (SAGALINE_COMMAND_SENDERS and
SAGALINE_REPLY_SENDERS) are off, because every process shares one broker user here instead of
the per-role users of compose's broker definitions.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from tests.container import support

READY_DEADLINE_S = 120.0
"""Every container serves /readyz 200 by then (the compose health check allows 30 s + 3 tries
per process; here nine start at once on a machine that may be running other tests)."""

PASSED_THROUGH = ("SAGALINE_GRACEFUL_TIMEOUT_SECONDS", "SAGALINE_LOG_LEVEL")
"""Settings taken from compose's environment as they are: the rest is per machine (above)."""


@dataclass
class Container:
    service: str
    name: str
    argv: tuple[str, ...]
    port: int
    compose_check: tuple[str, ...] | None
    """Compose's health check command for this service, aimed at this container's port."""
    launched_at: float = 0.0
    """time.time() when `podman run` was called."""
    ready_at: float | None = None


@dataclass
class Deployment:
    image: str
    run_id: str
    env: dict[str, str]
    """The variables every sagaline container gets (values passed through podman's own
    environment, so that no URL is on a command line)."""
    containers: dict[str, Container] = field(default_factory=dict)
    migrate_result: dict[str, Any] = field(default_factory=dict)

    def container_name(self, service: str) -> str:
        return f"sagaline-{self.run_id}-{service}"

    def run(
        self, argv: tuple[str, ...], *, name: str, port: int | None = None, detach: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """`podman run` of the image with the deployment's environment (host network from
        deploy/container/containers.conf)."""
        env = {**self.env, **({"SAGALINE_HTTP_PORT": str(port)} if port else {})}
        options = [f"--name={name}", f"--label={support.LABEL}={self.run_id}"]
        if detach:
            # No systemd here to schedule health checks: the tests run them (podman healthcheck
            # run) instead of podman's timer, which would only log an error.
            options += ["--detach", "--health-interval=disable"]
        else:
            options.append("--rm")
        return support.run_tool(
            [
                str(support.PODMAN),
                "run",
                *options,
                *(f"--env={key}" for key in sorted(env)),
                self.image,
                *argv,
            ],
            env={**os.environ, **env},
            timeout=support.CALL_TIMEOUT_S + 60,
            check=False,
        )

    def start(self, container: Container) -> None:
        container.launched_at = time.time()
        result = self.run(container.argv, name=container.name, port=container.port, detach=True)
        if result.returncode != 0:
            raise support.PodmanError(f"{container.name} did not start: {result.stderr[-2000:]}")
        self.containers[container.service] = container

    def wait_ready(self, services: list[str], deadline_s: float = READY_DEADLINE_S) -> None:
        """Poll each container's /readyz until 200; a container that exits fails at once."""
        deadline = time.monotonic() + deadline_s
        pending = [self.containers[service] for service in services]
        while pending and time.monotonic() < deadline:
            for container in list(pending):
                if support.http_ok(container.port, "/readyz"):
                    container.ready_at = time.time()
                    pending.remove(container)
                elif not self.running(container):
                    raise AssertionError(
                        f"{container.name} exited before ready:\n{self.logs(container)}"
                    )
            time.sleep(0.1)
        if pending:
            names = ", ".join(c.name for c in pending)
            raise AssertionError(
                f"not ready in {deadline_s:.0f} s: {names}\n{self.logs(pending[0])}"
            )

    def running(self, container: Container) -> bool:
        state = support.inspect("container", container.name)["State"]
        return bool(state["Running"])

    def logs(self, container: Container, lines: int = 60) -> str:
        result = support.podman("logs", "--tail", str(lines), container.name, check=False)
        return result.stdout + result.stderr


def plan(
    services: dict[str, support.Service], deployment: Deployment
) -> tuple[Container, list[Container]]:
    """The orchestrator, and every other long-running sagaline service that `docker compose up`
    starts (none of an optional profile), as containers."""
    containers = []
    for service in services.values():
        if not service.long_running or service.profiles:
            continue
        port = support.free_port()
        argv = list(service.argv)
        if "--port" in argv:  # the console takes its port as an option
            argv[argv.index("--port") + 1] = str(port)
        check = None
        if service.healthcheck is not None:
            compose_port, _ = support.health_url(service.healthcheck)
            check = tuple(
                part.replace(f":{compose_port}/", f":{port}/") for part in service.healthcheck
            )
        containers.append(
            Container(
                service=service.name,
                name=deployment.container_name(service.name),
                argv=tuple(argv),
                port=port,
                compose_check=check,
            )
        )
    orchestrator = next(c for c in containers if c.service == "orchestrator")
    return orchestrator, [c for c in containers if c is not orchestrator]


def migrate(deployment: Deployment, services: dict[str, support.Service]) -> None:
    """compose's one-shot `migrate` service: run to completion, exit 0, schema at head."""
    argv = (*services["migrate"].argv, "--json")
    result = deployment.run(argv, name=deployment.container_name("migrate"))
    assert result.returncode == 0, f"sagaline migrate exited {result.returncode}:\n{result.stderr}"
    deployment.migrate_result = json.loads(result.stdout)
