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
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.faults.private import PrivateRabbit

SIZE = 3


@dataclass
class Cluster:
    nodes: list[PrivateRabbit]

    @staticmethod
    def missing() -> str | None:
        return PrivateRabbit.missing()

    lan_address: str | None = None
    """Where the nodes listen besides 127.0.0.1 (the hosts' gateway), if anywhere."""

    @property
    def amqp_url(self) -> str:
        """Every node's URL, comma-separated, in node order (AMQP_URL's cluster form)."""
        return ",".join(node.amqp_url for node in self.nodes)

    def url_on(self, address: str, query: str = "") -> str:
        """AMQP_URL for clients on other hosts: every node at `address` (its port)."""
        assert address == self.lan_address, f"the nodes do not listen on {address}"
        suffix = f"?{query}" if query else ""
        return ",".join(f"amqp://guest:guest@{address}:{n.port}/{suffix}" for n in self.nodes)

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

    async def describe(self) -> str:
        """Every queue's leader, members, online members and state (for failure messages)."""
        try:
            return await self.running()[0].ctl(
                "list_queues", "name", "type", "leader", "online", "state", "messages", within=20
            )
        except Exception as exc:  # a diagnosis must not hide the failure it explains
            return f"<list_queues failed: {exc}>"

    async def held_by(self, address: str) -> tuple[int, int]:
        """(connections from `address`, deliveries unacknowledged on their channels), as the
        cluster sees them: what a host has in flight, until the broker closes its connections."""
        ctl = self.running()[0].ctl
        connections = await ctl("list_connections", "pid", "peer_host", "--no-table-headers")
        pids = {p[0] for line in connections.splitlines() if len(p := line.split()) == 2
                and p[1] == address}  # fmt: skip
        channels = await ctl(
            "list_channels", "connection", "messages_unacknowledged", "--no-table-headers"
        )
        unacked = sum(int(p[1]) for line in channels.splitlines()
                      if len(p := line.split()) == 2 and p[0] in pids)  # fmt: skip
        return len(pids), unacked

    async def destroy(self) -> None:
        keep = os.environ.get("SAGALINE_FAULTS_KEEP_LOGS")
        if keep:  # the nodes' logs, for a failure's post-mortem
            target = Path(tempfile.mkdtemp(prefix="sagaline-cluster-logs-"))
            for node in self.nodes:
                shutil.copytree(node.root / "log", target / node.node, dirs_exist_ok=True)
                shutil.copy(node.root / "server.out", target / node.node / "server.out")
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
async def three_nodes(lan_address: str | None = None) -> AsyncIterator[Cluster]:
    """Three clustered private nodes, also listening on `lan_address` if given; every node
    killed and its files removed afterwards."""
    nodes = [PrivateRabbit.create() for _ in range(SIZE)]
    cluster = Cluster(nodes, lan_address)
    try:
        cookie = secrets.token_hex(16).upper()
        config = _cluster_config([n.node for n in nodes])
        for node in nodes:
            lan = ""
            if lan_address is not None:
                # guest may log in only over loopback by default; the hosts come over the
                # bridge (a private node on a private network, for the test's lifetime).
                lan = f"listeners.tcp.lan = {lan_address}:{node.port}\nloopback_users = none\n"
            with (node.root / "rabbitmq.conf").open("a") as conf:
                conf.write("\n" + config + lan)
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
