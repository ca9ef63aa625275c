"""Deployment files agree with the code: compose commands exist, settings are documented.

docker compose cannot run on machines without a Docker engine, so these checks read the files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sagaline_tools.cli import app
from sagaline_tools.cli.common import env_name, worker_names
from sagaline_tools.cli.supervisor import plan_children

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def compose_argv() -> dict[str, list[str]]:
    """entrypoint + command of every compose service, read without a YAML library.

    The compose file writes both as JSON-style flow sequences, one per line, on purpose.
    """
    services: dict[str, list[str]] = {}
    parts: dict[str, dict[str, list[str]]] = {}
    current = None
    in_services = False
    for line in COMPOSE.read_text().splitlines():
        if re.match(r"^\S", line):
            in_services = line.startswith("services:")
            continue
        if not in_services:
            continue
        if match := re.match(r"^  ([a-z][\w-]*):\s*$", line):
            current = match.group(1)
            parts[current] = {}
        elif current and (match := re.match(r"^    (command|entrypoint): (\[.*\])\s*$", line)):
            parts[current][match.group(1)] = json.loads(match.group(2))
    for name, found in parts.items():
        if "command" in found or "entrypoint" in found:
            services[name] = found.get("entrypoint", []) + found.get("command", [])
    return services


def test_compose_commands_exist() -> None:
    argvs = compose_argv()
    assert argvs, "no command found in docker-compose.yml"
    known = {spec.argv[1:] for spec in plan_children(worker_names(), 8080)}
    for service, argv in argvs.items():
        if argv[0] == "sagaline":
            result = CliRunner().invoke(app, [*argv[1:], "--help"])
            assert result.exit_code == 0, f"{service}: `{' '.join(argv)}` is not a CLI command"
        else:
            assert argv[:2] == ["python", "-m"], f"{service}: unexpected command {argv}"
            # The same processes `sagaline up` starts, so compose and `up` cannot drift apart.
            assert tuple(argv[1:]) in known, f"{service}: {argv} is not a sagaline process"
            assert importlib.util.find_spec(f"{argv[2]}.__main__"), f"{argv[2]} has no __main__"


def test_compose_runs_every_worker_and_the_orchestrator() -> None:
    argvs = compose_argv().values()
    workers = {argv[3] for argv in argvs if argv[:3] == ["python", "-m", "consumers"]}
    assert workers == set(worker_names())
    assert ["python", "-m", "orchestrator"] in list(argvs)
    assert ["sagaline", "migrate"] in list(argvs)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to check compose's structure")
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", value)
    assert match, value
    number, unit = float(match.group(1)), match.group(2)
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def test_compose_long_running_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    long_running = ["orchestrator", *worker_names()]
    for name in long_running:
        service = services[name]
        depends = service["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        graceful = float(service["environment"]["SAGALINE_GRACEFUL_TIMEOUT_SECONDS"])
        assert _seconds(service["stop_grace_period"]) > graceful
        assert service["image"] == services["migrate"]["image"]  # one image for every role


def test_compose_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.10")
    assert services["postgres"]["image"] == "postgres:15"
    for name in ("rabbitmq", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["restart"] == "no"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{source} is mounted but missing"


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2, "builder + final stage"
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user, "must not run as root"
    assert user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    for line in re.findall(r"^(?:ENV|ARG) .*(?:\n\s+.*\\?)*", text, re.M):
        assert not re.search(r"PASSWORD|SECRET|TOKEN|AMQP_URL|DATABASE_URL", line), line
    for package in ("sagaline", "orchestrator", "consumers", "contracts", "migrations"):
        assert f"COPY {package} ./{package}" in text, package


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "tests"} <= ignored


def test_ci_script() -> None:
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert "status == 5" in text, "pytest's 'no tests collected' must fail CI"


def test_readme_documents_every_setting() -> None:
    from consumers.settings import WorkerSettings
    from sagaline.settings import Settings

    readme = (ROOT / "README.md").read_text()
    fields = [*Settings.model_fields, *WorkerSettings.model_fields]
    missing = [env_name(field) for field in fields if f"`{env_name(field)}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_readme_order_diagram_matches_the_workflow() -> None:
    from orchestrator.engine.diagram import mermaid
    from orchestrator.workflows.order import machine

    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- order-diagram:start -->\n```mermaid\n(.*?)```\n<!-- order-diagram:end -->",
        readme,
        re.S,
    )
    assert block, "README lost its order-diagram markers"
    assert block.group(1) == mermaid(machine), (
        "README's order diagram is out of date; replace the block between the markers with "
        "the output of: python -c 'from orchestrator.engine.diagram import mermaid; "
        'from orchestrator.workflows.order import machine; print(mermaid(machine), end="")\''
    )
