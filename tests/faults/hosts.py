"""Hosts for the fault suite: one Linux network namespace per "host", on a bridge of its own.

    root namespace: bridge slXXXXXX, 10.233.N.1/24 (the cluster's and the database's address)
      |-- veth slXXXXXXh0 <-> eth0 in namespace sagaline-XXXXXX-h0, 10.233.N.10
      |-- veth slXXXXXXh1 <-> eth0 in namespace sagaline-XXXXXX-h1, 10.233.N.11
      ...

A process on a host runs through `ip netns exec` (which execs it: its pid is the process's)
and reaches the broker nodes and PostgreSQL only over the bridge, at the gateway address;
those listen there besides 127.0.0.1. Cutting a host sets its root-side veth down: its eth0
loses carrier, packets in both directions are dropped, nothing is reset (a pulled cable, not
a refused connection), so peers learn of it only by heartbeats and keepalives. Restoring sets
it up again.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip`; `missing()` says exactly what failed
otherwise. Every namespace, veth and the bridge are removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

SUBNET_PREFIX = "10.233"
"""Two octets of a private /16 the bridges are carved from (one /24 per run, random)."""


@dataclass(frozen=True)
class Host:
    index: int
    namespace: str
    address: str
    veth: str
    """The root namespace's end of the host's link (set down to cut the host off)."""

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)


@dataclass
class Lan:
    tag: str
    subnet: str
    """The /24's first three octets."""
    hosts: list[Host] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"sl{self.tag}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge: where the hosts reach the services."""
        return f"{self.subnet}.1"

    @staticmethod
    def missing() -> str | None:
        """Why hosts cannot be made here (the command and its error), or None."""
        if shutil.which("ip") is None:
            return "the `ip` command (iproute2) is not installed"
        if os.geteuid() != 0:
            return f"network namespaces need root; running as uid {os.geteuid()}"
        probe = f"sagaline-probe-{secrets.token_hex(3)}"
        try:
            _ip("netns", "add", probe)
        except AssertionError as exc:
            return str(exc)
        veth = f"sp{probe[-6:]}"
        try:
            _ip("link", "add", f"{veth}a", "type", "veth", "peer", "name", f"{veth}b")
            _ip("link", "del", f"{veth}a")
        except AssertionError as exc:
            return str(exc)
        finally:
            with contextlib.suppress(AssertionError):
                _ip("netns", "del", probe)
        return None

    def cut(self, host: Host) -> None:
        _ip("link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.veth, "up")


@contextlib.contextmanager
def lan(count: int) -> Iterator[Lan]:
    """A bridge with `count` hosts on it; all of it removed afterwards, also on failure."""
    tag = secrets.token_hex(3)
    value = Lan(tag, f"{SUBNET_PREFIX}.{secrets.randbelow(250) + 2}")
    try:
        _ip("link", "add", "name", value.bridge, "type", "bridge")
        _ip("addr", "add", f"{value.gateway}/24", "dev", value.bridge)
        _ip("link", "set", value.bridge, "up")
        for index in range(count):
            host = Host(index, f"sagaline-{tag}-h{index}", f"{value.subnet}.{10 + index}",
                        f"sl{tag}h{index}")  # fmt: skip
            value.hosts.append(host)
            peer = f"sl{tag}p{index}"
            _ip("netns", "add", host.namespace)
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
            _ip("link", "set", host.veth, "master", value.bridge)
            _ip("link", "set", host.veth, "up")
            _ip("link", "set", peer, "netns", host.namespace)
            inside = ("-n", host.namespace)
            _ip(*inside, "link", "set", peer, "name", "eth0")
            _ip(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
            _ip(*inside, "link", "set", "lo", "up")
        yield value
    finally:
        for host in value.hosts:
            # Deleting the namespace deletes its end of the veth, and with it the pair.
            with contextlib.suppress(AssertionError):
                _ip("netns", "del", host.namespace)
            with contextlib.suppress(AssertionError):
                _ip("link", "del", host.veth)
        with contextlib.suppress(AssertionError):
            _ip("link", "del", value.bridge)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
