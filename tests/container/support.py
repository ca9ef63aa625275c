"""podman as the container tests drive it (deploy/container/podman), and what they read.

Every call has a deadline; every container the tests make carries the label `LABEL` so that
cleanup finds it (and the leftovers of a run that was killed) by label, never by name; the
image is found by its repository name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONTAINER_DIR = ROOT / "deploy" / "container"
PODMAN = CONTAINER_DIR / "podman"
BASE_IMAGE = CONTAINER_DIR / "base-image"
COMPOSE_FILE = ROOT / "docker-compose.yml"

LABEL = "sagaline.test"
"""Label on every container the container tests make; its value is the run id."""
IMAGE_REPOSITORY = "localhost/sagaline-test"
"""sagaline's image is tagged IMAGE_REPOSITORY:<run id> for one run."""
BUILDER_CACHE = "localhost/sagaline-build-cache:builder"

BUILD_TIMEOUT_S = 900.0
"""First build on a new machine: debootstrap (about 1.5 min) and PyPI downloads; later ~1 min."""
CALL_TIMEOUT_S = 120.0


FIGURES: list[str] = []
"""Figures measured in this run (build times, image size, start-up), printed at its end."""


def report(line: str) -> None:
    FIGURES.append(line)


@dataclass(frozen=True)
class BuiltImage:
    name: str
    canary: str
    """A random string planted where secrets live at build time (conftest's `image`): it must
    appear nowhere in the image."""
    build_seconds: float


class PodmanError(AssertionError):
    """A podman call failed or overran its deadline; the message carries its output."""


def unavailable_reason() -> str | None:
    """Why podman cannot run sagaline's image here, or None when it can."""
    if os.geteuid() != 0:
        return "they need root (debootstrap, podman's run-time state under /run)"
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed (bash .ci/run installs it with apt-get)"
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        return "debootstrap is not installed (bash .ci/run installs it with apt-get)"
    return None


def podman(
    *args: str, timeout: float = CALL_TIMEOUT_S, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run deploy/container/podman with `args`; raise PodmanError on failure when `check`."""
    return run_tool([str(PODMAN), *args], timeout=timeout, check=check)


def run_tool(
    argv: list[str],
    *,
    timeout: float = CALL_TIMEOUT_S,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise PodmanError(f"{' '.join(argv[:4])} ... took over {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise PodmanError(
            f"{' '.join(argv)} exited {result.returncode}:\n"
            f"{_tail(result.stdout)}\n{_tail(result.stderr)}"
        )
    return result


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def cache_dir() -> Path:
    """Where deploy/container keeps its image store and the base image's lock."""
    default = Path(os.environ.get("HOME", "/root")) / ".cache" / "sagaline-container"
    return Path(os.environ.get("SAGALINE_CONTAINER_CACHE", default))


def storage_driver() -> str:
    """overlay or vfs: what deploy/container/podman chose on this machine."""
    return podman("storage-driver").stdout.strip()


def build_image(context: Path, name: str, base: str, driver: str, env: dict[str, str]) -> None:
    """Build the Dockerfile in `context` as `name`, on `base` (the PYTHON_IMAGE build argument).

    With overlay, layers are cached between runs: the builder stage is built (and tagged as
    BUILDER_CACHE) first, so that its dependency layer, the slow one, stays referenced and is
    reused while pyproject.toml is unchanged; the tag moves to each new build, so the cache
    holds one builder chain. With vfs every layer is a full copy of the file system (about
    250 MB each), so the build runs without intermediate layers.
    """
    common = [
        "--format=docker",  # Docker's format keeps HEALTHCHECK (OCI's has no such field)
        "--network=host",
        "--force-rm",
        f"--build-arg=PYTHON_IMAGE={base}",
    ]
    if driver == "overlay":
        cache = ["--layers", "--target=builder", f"--tag={BUILDER_CACHE}"]
        run_tool(
            [str(PODMAN), "build", *cache, *common, str(context)],
            env=env,
            timeout=BUILD_TIMEOUT_S,
        )
        steps = ["--layers"]
    else:
        steps = ["--layers=false"]
    run_tool(
        [str(PODMAN), "build", *steps, *common, f"--tag={name}", str(context)],
        env=env,
        timeout=BUILD_TIMEOUT_S,
    )
    # Images left untagged by a moved cache tag or a failed build hold nothing of value (the
    # base image and the builder cache are tagged).
    podman("image", "prune", "--force", check=False)


def remove_run_containers(run_id: str) -> None:
    """Remove one run's containers, running or not."""
    ids = podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}={run_id}").stdout.split()
    if ids:
        podman("rm", "--force", "--time", "0", *ids, check=False)


def remove_run(run_id: str) -> None:
    """Remove one run's containers and its image tag (the cached layers stay)."""
    remove_run_containers(run_id)
    podman("rmi", f"{IMAGE_REPOSITORY}:{run_id}", check=False)
    podman("image", "prune", "--force", check=False)


def remove_leftovers() -> None:
    """Every container and image tag of earlier runs (call while holding the tests' lock)."""
    ids = podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}").stdout.split()
    if ids:
        podman("rm", "--force", "--time", "0", *ids, check=False)
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    tags = [tag for tag in listed.stdout.split() if tag.startswith(f"{IMAGE_REPOSITORY}:")]
    if tags:
        podman("rmi", *tags, check=False)
    podman("image", "prune", "--force", check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def inspect(kind: str, name: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(podman(kind, "inspect", name).stdout)
    return data[0]


def started_at(container: str) -> float:
    """When the container's process started, as a Unix time (podman's RFC 3339, nanoseconds)."""
    value = inspect("container", container)["State"]["StartedAt"]
    # Python parses at most microseconds: cut the fraction to six digits.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", value)
    return datetime.fromisoformat(trimmed).timestamp()


def wait_until(condition: Any, deadline_s: float, what: str, poll_s: float = 0.1) -> float:
    """Poll `condition()` until true; return the time.time() it first held."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {deadline_s:.0f} s")


@dataclass(frozen=True)
class Service:
    """A compose service that runs sagaline's image, as `docker-compose config` resolves it."""

    name: str
    argv: tuple[str, ...]
    """entrypoint + command, as the container runs them."""
    environment: dict[str, str]
    healthcheck: tuple[str, ...] | None
    """The health check's test (CMD form, without "CMD"); None when disabled or absent."""
    stop_grace_s: float | None
    health_start_period_s: float
    profiles: tuple[str, ...]
    """Compose profiles it belongs to; none: `docker compose up` starts it."""

    @property
    def long_running(self) -> bool:
        return self.healthcheck is not None

    @property
    def http_port(self) -> int:
        """The port the process serves /healthz and /readyz on: `--port` for the console,
        else SAGALINE_HTTP_PORT (the image's default is 8080)."""
        if "--port" in self.argv:
            return int(self.argv[self.argv.index("--port") + 1])
        return int(self.environment.get("SAGALINE_HTTP_PORT", "8080"))


def compose_config() -> dict[str, Any]:
    """`docker-compose config` of the repository's compose file, parsed.

    Run with only PATH and HOME in its environment so that every `${VAR:-default}` takes the
    file's own default, whatever the caller's shell holds.
    """
    import yaml

    tool = shutil.which("docker-compose")
    if tool is None:
        raise PodmanError("docker-compose is not installed (bash .ci/run installs it)")
    result = run_tool(
        [tool, "--file", str(COMPOSE_FILE), "--project-directory", str(ROOT), "config"],
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/nonexistent"},
        timeout=60,
    )
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


def sagaline_services(config: dict[str, Any]) -> dict[str, Service]:
    """The services that run sagaline's own image (the others are RabbitMQ, PostgreSQL, ...)."""
    services: dict[str, Service] = {}
    for name, spec in config["services"].items():
        if not str(spec.get("image", "")).startswith("sagaline:"):
            continue
        argv = (*_as_list(spec.get("entrypoint")), *_as_list(spec.get("command")))
        check = spec.get("healthcheck") or {}
        test = None
        # A disabled check reads `test: [NONE]` once resolved.
        if not check.get("disable") and check.get("test") and check["test"][0] != "NONE":
            assert check["test"][0] == "CMD", f"{name}: health check not in CMD form"
            test = tuple(check["test"][1:])
        services[name] = Service(
            name=name,
            argv=argv,
            environment={k: str(v) for k, v in (spec.get("environment") or {}).items()},
            healthcheck=test,
            stop_grace_s=_seconds(spec["stop_grace_period"])
            if "stop_grace_period" in spec
            else None,
            health_start_period_s=_seconds(check.get("start_period", "0s")),
            profiles=tuple(spec.get("profiles", ())),
        )
    return services


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(part) for part in value]


def _seconds(value: Any) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(value))
    assert match, f"unreadable duration {value!r}"
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


def health_url(test: tuple[str, ...]) -> tuple[int, str]:
    """The port and path a compose health check (python -c "...urlopen('http://...')") calls."""
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", " ".join(test))
    assert match, f"no local URL in health check {test}"
    return int(match.group(1)), match.group(2)
