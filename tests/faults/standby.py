"""A PostgreSQL primary with a streaming standby (two private instances) and the address
clients use, for the failover scenario.

- The primary (tests/faults/private.py's PrivatePostgres) runs with synchronous replication
  (`synchronous_standby_names = '*'`): a commit is acknowledged to the client only once the
  standby has it, so whatever sagaline acknowledged to RabbitMQ survives the failover.
- The standby is a `pg_basebackup -R` of it (standby.signal, primary_conninfo), promoted with
  `pg_ctl promote`.
- `Repointer` is the one address the processes know (DATABASE_URL): a TCP forwarder to the
  current primary, as a virtual IP, a DNS name or PgBouncer/HAProxy would be in production.
  Repointing drops every connection it carries (a moved address does that too) and sends new
  ones to the promoted standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.private import PrivatePostgres, free_port


def make_standby(primary: PrivatePostgres) -> PrivatePostgres:
    """A streaming replica of the (running) primary, not started."""
    root = Path(tempfile.mkdtemp(prefix="sagaline-pg-standby-"))
    if primary.user is not None:
        shutil.chown(root, primary.user)
    standby = PrivatePostgres(root, primary.bindir, user=primary.user)
    standby._run(
        "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
        "-D", str(standby.data), "-R", "-X", "stream", "--no-sync",
    )  # fmt: skip
    return standby


async def promote(standby: PrivatePostgres) -> None:
    """End recovery: the standby becomes a primary (waits until it accepts writes)."""
    await asyncio.to_thread(
        standby._run, "pg_ctl", "-D", str(standby.data), "-w", "-t", "60", "promote"
    )


@dataclass
class Repointer:
    """A TCP forwarder on 127.0.0.1:port to 127.0.0.1:target."""

    target: int
    port: int = field(default_factory=free_port)
    connections: int = 0
    """Client connections accepted so far."""
    _server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def repoint(self, target: int) -> None:
        """New connections go to `target`; every current one is dropped."""
        self.target = target
        await self._drop_all()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._drop_all()

    async def _drop_all(self) -> None:
        pipes, self._pipes = set(self._pipes), set()
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target
            )
        except OSError:
            writer.close()  # nobody there: the client sees its connection refused/closed
            self._pipes.discard(task)
            return
        try:
            await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))
        finally:
            for w in (writer, upstream_writer):
                with contextlib.suppress(Exception):
                    w.close()
            self._pipes.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
