"""What sagaline's image promises, checked on the image built from the real Dockerfile:
a non-root user, no secret from the build's context or environment in any layer, its history
or its configuration, nothing of the build toolchain, and a bounded size (reported)."""

from __future__ import annotations

import json
import tarfile
import zlib
from pathlib import Path
from typing import IO

import pytest

from tests.container import support
from tests.container.support import BuiltImage, report

# The first test in a session also waits for the base image and the build (cold: minutes).
pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

SIZE_LIMIT_MB = 300
"""Debian minbase with Python (~125 MB) plus sagaline's virtualenv (~120 MB), with headroom:
a dependency or a layer that doubles the image fails here instead of going unnoticed."""


def test_runs_as_a_non_root_user(image: BuiltImage) -> None:
    config = support.inspect("image", image.name)["Config"]
    assert config["User"] == "10001:10001"
    script = "import os; print(os.getuid(), os.getgid(), os.getgroups())"
    ids = (
        support.podman("run", "--rm", image.name, "python", "-c", script)
        .stdout.strip()
        .split(maxsplit=2)
    )
    assert ids == ["10001", "10001", "[10001]"]


def test_carries_no_secret(image: BuiltImage, tmp_path: Path) -> None:
    history = support.podman("history", "--no-trunc", "--format", "json", image.name).stdout
    assert image.canary not in history
    inspected = json.dumps(support.inspect("image", image.name))
    assert image.canary not in inspected
    env = support.inspect("image", image.name)["Config"]["Env"]
    leaked = [v.split("=")[0] for v in env if v.startswith(("AMQP_URL=", "DATABASE_URL="))]
    assert not leaked, f"connection URLs baked into the image: {leaked}"

    archive = tmp_path / "image.tar"
    support.podman("save", "--format", "docker-archive", "--output", str(archive), image.name)
    found, secret_files = _scan_layers(archive, image.canary.encode())
    assert not found, f"the build's secret is in layer(s) {found}"
    assert not secret_files, f"secret-looking files in the image: {secret_files}"


def test_size_and_trimmed(image: BuiltImage) -> None:
    size_mb = support.inspect("image", image.name)["Size"] / 1e6
    report(f"image size {size_mb:.0f} MB")
    assert size_mb < SIZE_LIMIT_MB
    # Installing is the builder's job: the runtime has no pip or setuptools, no source tree.
    script = (
        "import importlib.util, os, sys; "
        "print(json.dumps([m for m in ('pip', 'setuptools') if importlib.util.find_spec(m)]"
        " + [p for p in ('/src', '/root/.cache') if os.path.exists(p)]))"
    )
    out = support.podman("run", "--rm", image.name, "python", "-c", f"import json; {script}")
    assert json.loads(out.stdout) == []


def _scan_layers(archive: Path, needle: bytes) -> tuple[list[str], list[str]]:
    """Layers of a docker-archive whose bytes contain `needle`, and files named like secrets."""
    found: list[str] = []
    secret_files: list[str] = []
    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.isfile():
                continue
            stream = outer.extractfile(member)
            assert stream is not None
            if _contains(stream, needle):
                found.append(member.name)
            if member.name.endswith(".tar"):
                stream = outer.extractfile(member)
                assert stream is not None
                with tarfile.open(fileobj=stream, mode="r|*") as layer:
                    secret_files += [
                        f"{member.name}:{entry.name}"
                        for entry in layer
                        if entry.isfile() and _secret_name(entry.name)
                    ]
    return found, secret_files


PUBLIC_PEM = ("etc/ssl/certs/", "certifi/cacert.pem")
"""Certificate authorities' public certificates: the only .pem files the image may hold
(symbolic links hold nothing and are not looked at)."""


def _secret_name(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".pem"):
        return not any(public in path for public in PUBLIC_PEM)
    return name == ".env" or name.endswith((".env", ".key"))


def _contains(stream: IO[bytes], needle: bytes, chunk: int = 1 << 20) -> bool:
    """Search a (possibly gzip-compressed) stream for `needle` without loading it whole."""
    head = stream.read(2)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if head == b"\x1f\x8b" else None
    tail = b""
    data = head
    while True:
        if inflate is not None:
            data = inflate.decompress(data)
        window = tail + data
        if needle in window:
            return True
        tail = window[-len(needle) :]
        data = stream.read(chunk)
        if not data:
            return False
