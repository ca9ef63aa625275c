"""A three-node RabbitMQ cluster of private nodes (tests/faults/private.py), for the cluster
and host scenarios.

The nodes share an Erlang cookie (written into each node's HOME before its first boot) and
find each other with the classic_config peer discovery: the first node boots alone and
becomes the seed, the other two boot at once and join it. Quorum queues declared afterwards
get a replica on every member (their initial group size defaults to the cluster's size).

A node is killed with SIGKILL to its whole process group (the Erlang VM, no shutdown), and
restarted from the same data directory, where it rejoins the cluster by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tests.faults.private import PrivateRabbit

SIZE = 3


@dataclass
class Cluster:
    nodes: list[PrivateRabbit]

    @staticmethod
    def missing() -> str | None:
        return PrivateRabbit.missing()

    @property
    def amqp_url(self) -> str:
        """Every node's URL, comma-separated, in node order (AMQP_URL's cluster form)."""
        return ",".join(node.amqp_url for node in self.nodes)

    def node(self, name: str) -> PrivateRabbit:
        return next(node for node in self.nodes if node.node == name)

    def running(self) -> list[PrivateRabbit]:
        return [n for n in self.nodes if n.server is not None and n.server.poll() is None]

    async def members(self) -> set[str]:
        """Running cluster members, as one running node sees them."""
        status = await self.running()[0].ctl("cluster_status", "--formatter", "json")
        return set(json.loads(status[status.index("{") :])["running_nodes"])

    def kill(self, node: PrivateRabbit) -> None:
        """kill -9 the node's Erlang VM (and its start script): no shutdown of any kind."""
        assert node.server is not None and node.server.poll() is None, f"{node.node} not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.server.pid, signal.SIGKILL)
        node.server.wait(timeout=30)

    async def restart(self, node: PrivateRabbit) -> None:
        await node.start()

    async def leaders(self, queues: Iterable[str]) -> dict[str, str]:
        """{queue: the node leading it} for quorum queues, as a running node reports it."""
        wanted = set(queues)
        out = await self.running()[0].ctl("list_queues", "name", "leader", "--no-table-headers")
        found: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in wanted:
                found[parts[0]] = parts[1]
        return found

    async def members_of(self, queue: str) -> set[str]:
        """The nodes holding a replica of a quorum queue."""
        out = await self.running()[0].ctl("list_queues", "name", "members", "--no-table-headers")
        for line in out.splitlines():
            if line.split(maxsplit=1)[:1] == [queue]:
                return set(re.findall(r"[\w.-]+@[\w.-]+", line.split(maxsplit=1)[1]))
        return set()

    async def destroy(self) -> None:
        for node in self.nodes:
            if node.server is not None and node.server.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.server.pid, signal.SIGKILL)
                node.server.wait(timeout=30)
        await asyncio.gather(*(node.destroy() for node in self.nodes))


def _cluster_config(names: list[str]) -> str:
    lines = ["cluster_formation.peer_discovery_backend = classic_config"]
    lines += [f"cluster_formation.classic_config.nodes.{i} = {n}" for i, n in enumerate(names, 1)]
    # A killed member must not stop the others from serving (the default, ignore, keeps them
    # up); they see it gone after the distribution's tick, sped up from 60 s.
    lines += ["cluster_partition_handling = ignore", "net_ticktime = 10"]
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def three_nodes(extra_config: str = "") -> AsyncIterator[Cluster]:
    """Three clustered private nodes; every node killed and its files removed afterwards."""
    nodes = [PrivateRabbit.create(extra_config) for _ in range(SIZE)]
    cluster = Cluster(nodes)
    try:
        cookie = secrets.token_hex(16).upper()
        config = _cluster_config([n.node for n in nodes])
        for node in nodes:
            with (node.root / "rabbitmq.conf").open("a") as conf:
                conf.write("\n" + config)
            path = node.root / "home" / ".erlang.cookie"
            path.write_text(cookie)
            path.chmod(0o400)
        await nodes[0].start()
        await asyncio.gather(*(node.start() for node in nodes[1:]))
        joined = await cluster.members()
        assert joined == {n.node for n in nodes}, f"cluster did not form: {sorted(joined)}"
        yield cluster
    finally:
        await cluster.destroy()
