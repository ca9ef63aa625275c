"""docker-compose.yml as Debian's docker-compose resolves it (`config`: the file parses and
validates) agrees with the image and the code: every service that runs sagaline's image runs a
command the image has, sets only variables sagaline reads, and health-checks an endpoint its
process serves on the port it listens on (test_deployment runs those checks in containers).

tests/unit/test_cli_deploy.py reads the file as text against the source tree; this reads what
compose itself makes of it, and asks the built image."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from consumers.settings import WorkerSettings
from sagaline.settings import Settings
from sagaline_tools.cli.common import env_name
from sagaline_tools.cli.common import worker_names as cli_worker_names
from sagaline_tools.console.settings import ConsoleSettings
from tests.container import support
from tests.container.support import BuiltImage

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

HEALTH_PATHS = {"/healthz", "/readyz"}
"""What sagaline's processes serve besides /metrics (sagaline/service.py)."""


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, support.Service]:
    return support.sagaline_services(compose)


def test_compose_up_starts_every_sagaline_process(
    services: dict[str, support.Service],
) -> None:
    default = {name for name, service in services.items() if not service.profiles}
    assert default == {"migrate", "orchestrator", "console", *cli_worker_names()}
    assert services["cli"].profiles == ("tools",)


def test_every_command_is_one_the_image_has(
    image: BuiltImage, services: dict[str, support.Service]
) -> None:
    """Asked inside the image: `sagaline ...` answers --help, `python -m X` has X.__main__,
    and a worker's name is one the image's consumers registry knows."""
    argvs = {name: list(service.argv) for name, service in services.items()}
    script = """
import importlib.util, json, subprocess, sys
from consumers import WORKERS
problems = {}
for name, argv in json.loads(sys.argv[1]).items():
    if argv[0] == "sagaline":
        run = subprocess.run([*argv, "--help"], capture_output=True, text=True)
        if run.returncode:
            problems[name] = run.stderr[-300:]
    elif argv[:2] == ["python", "-m"] and importlib.util.find_spec(argv[2] + ".__main__"):
        if argv[2] == "consumers" and argv[3:] != [] and argv[3] not in WORKERS:
            problems[name] = "no such worker: " + argv[3]
    else:
        problems[name] = "not a command of the image: " + " ".join(argv)
print(json.dumps(problems))
"""
    result = support.podman("run", "--rm", image.name, "python", "-c", script, json.dumps(argvs))
    assert json.loads(result.stdout) == {}


def _env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a pydantic-settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = set()
    for field, info in settings.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names |= {str(choice) for choice in choices}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field}".upper())
    return names


def test_every_variable_set_is_one_sagaline_reads(
    compose: dict[str, Any], services: dict[str, support.Service]
) -> None:
    read = _env_names(Settings) | _env_names(WorkerSettings)
    # The shared helper names the same variables (the CLI's error messages use it).
    assert {env_name(f) for f in (*Settings.model_fields, *WorkerSettings.model_fields)} <= read
    console = _env_names(ConsoleSettings)
    for name, service in services.items():
        known = read | console if name == "console" else read
        unknown = set(service.environment) - known
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
    # PostgreSQL's service passes the role passwords to deploy/postgres/initdb.
    initdb = "".join(p.read_text() for p in (support.ROOT / "deploy/postgres/initdb").iterdir())
    postgres_env = compose["services"]["postgres"]["environment"]
    for variable in postgres_env:
        if variable.startswith("SAGALINE_"):
            assert variable in initdb, f"postgres sets {variable}; initdb never reads it"


def test_health_checks_point_at_endpoints_the_process_serves(
    compose: dict[str, Any], services: dict[str, support.Service]
) -> None:
    long_running = [s for s in services.values() if s.long_running]
    started = {s.name for s in long_running if not s.profiles}
    assert started == {"orchestrator", "console", *cli_worker_names()}
    for service in long_running:
        assert service.healthcheck is not None
        port, path = support.health_url(service.healthcheck)
        assert path in HEALTH_PATHS, f"{service.name}: {path}"
        assert port == service.http_port, (
            f"{service.name} checks {port}, listens on {service.http_port}"
        )
        published = compose["services"][service.name].get("ports", [])
        targets = {int(re.sub(r"/\w+$", "", str(p).rsplit(":", 1)[-1])) for p in published}
        assert service.http_port in targets, f"{service.name} publishes {published}"
        assert service.health_start_period_s > 0
    for name in ("migrate", "cli"):
        assert services[name].healthcheck is None, f"{name} is one-shot: no health check"
