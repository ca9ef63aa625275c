"""AMQP_URL as a list of broker nodes: parsing and checks (pure, no I/O).

AMQP_URL takes one URL, or a comma-separated list of URLs naming the nodes of one RabbitMQ
cluster (sagaline/messaging/nodes.py connects over them). The URLs may differ only in host and
port: one scheme (TLS for all or none), one user and password, one virtual host, the same query
options. Errors say which entry is wrong and how, never quoting a value (a URL may carry a
password).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from yarl import URL

SCHEMES = ("amqp", "amqps")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


class NodeListError(ValueError):
    """AMQP_URL is not a usable list of node URLs (the message never quotes values)."""


@dataclass(frozen=True)
class Node:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_node_list(amqp_url: str) -> bool:
    return "," in amqp_url


def parse_nodes(amqp_url: str) -> tuple[URL, ...]:
    """A list's entries, checked: each an amqp(s) URL with a host, all alike but for host and
    port, no node twice. A single URL is returned as it is, unchecked, as it always was (the
    client library reports what is wrong with it when it connects)."""
    if not is_node_list(amqp_url):
        return (URL(amqp_url),)
    entries = [part.strip() for part in amqp_url.split(",")]
    count = len(entries)
    urls: list[URL] = []
    for position, entry in enumerate(entries, 1):
        where = f"AMQP_URL entry {position} of {count}"
        if not entry:
            raise NodeListError(f"{where} is empty (a stray comma?)")
        try:
            url = URL(entry)
            host = url.host
        except (ValueError, TypeError):
            raise NodeListError(f"{where} is not a URL") from None
        if url.scheme not in SCHEMES or not host:
            raise NodeListError(f"{where} is not an amqp:// or amqps:// URL with a host")
        urls.append(url)
    first = urls[0]
    for position, url in enumerate(urls[1:], 2):
        different = _differences(first, url)
        if different:
            raise NodeListError(
                f"AMQP_URL entry {position} of {count} differs from entry 1 in its "
                f"{', '.join(different)}: the URLs of one cluster may differ only in host and port"
            )
    seen: set[Node] = set()
    for position, url in enumerate(urls, 1):
        node = node_of(url)
        if node in seen:
            raise NodeListError(f"AMQP_URL entry {position} of {count} repeats a node")
        seen.add(node)
    return tuple(urls)


def _differences(first: URL, other: URL) -> list[str]:
    checks = (
        ("scheme", first.scheme == other.scheme),
        ("user", first.user == other.user),
        ("password", first.password == other.password),
        ("virtual host", first.path == other.path),
        ("query options", sorted(first.query.items()) == sorted(other.query.items())),
    )
    return [name for name, same in checks if not same]


def node_of(url: URL) -> Node:
    assert url.host is not None
    return Node(url.host, url.port or DEFAULT_PORTS[url.scheme])


class NodeRing:
    """Which node comes next: the given order, then round and round (pure, no I/O)."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        assert nodes, "a ring needs at least one node"
        self.nodes = tuple(nodes)
        self.index = 0

    @property
    def current(self) -> Node:
        return self.nodes[self.index]

    def advance(self) -> Node:
        self.index = (self.index + 1) % len(self.nodes)
        return self.current
