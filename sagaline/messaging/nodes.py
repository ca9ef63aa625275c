"""Connections over several RabbitMQ nodes: AMQP_URL as a comma-separated list of URLs.

    AMQP_URL=amqp://app:secret@rabbit-1:5672/prod,amqp://app:secret@rabbit-2:5672/prod,...

(sagaline/amqp_nodes.py checks the list.) A process first tries the nodes in the order given
and fails only when none answers; once connected, every lost connection and every failed
reconnection attempt moves on to the next node (round-robin), so a process whose node died
reconnects to a surviving one. Replicas that should spread over the nodes list them in
different orders. One URL behaves exactly as it always did.

aio-pika has no list of hosts, so `NodeListConnection` is its robust connection with the URL
taken from a ring of nodes; `connect_robust` and `fail_over` hand it to sagaline's own
connections and to FastStream's broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection, TimeoutType
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from faststream.rabbit import RabbitBroker
from yarl import URL

from sagaline.amqp_nodes import Node, NodeRing, node_of, parse_nodes

log = logging.getLogger("sagaline.nodes")


class NodeListConnection(RobustConnection):
    """A robust connection over a ring of nodes: the next node after every loss or failed
    attempt. Subclasses made by `connection_class` carry the nodes (connect_robust builds the
    connection from a URL and keyword arguments, so the list travels on the class)."""

    NODES: ClassVar[tuple[Node, ...]] = ()

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any):
        # Set before RobustConnection.__init__, which assigns `url` (the property below).
        self._ring = NodeRing(self.NODES or (node_of(URL(url)),))
        self._fail_fast = _flag(kwargs.pop("fail_fast", URL(url).query.get("fail_fast", True)))
        # The first round (connect below) does what fail_fast asks; the robust loop must not
        # give up after one node refused.
        super().__init__(url, loop=loop, fail_fast=False, **kwargs)

    @property
    def url(self) -> URL:
        node = self._ring.current
        return self._base_url.with_host(node.host).with_port(node.port)

    @url.setter
    def url(self, value: URL) -> None:
        # aio-pika sets it at construction and when the secret is updated: keep user,
        # password, path and query; the host and port come from the ring.
        self._base_url = URL(value)

    @property
    def node(self) -> Node:
        """The node this connection uses (or will try next while it is down)."""
        return self._ring.current

    async def connect(self, timeout: TimeoutType = None) -> None:  # noqa: ASYNC109 (aio-pika's)
        """Try each node once, in order; with fail_fast (the default) raise the last error if
        none answered, otherwise keep trying round-robin until one does."""
        error: BaseException | None = None
        for _ in self._ring.nodes:
            try:
                # Connection.connect opens one transport to `self.url`; a failure goes
                # through _on_connection_close, which moves the ring on.
                await aio_pika.Connection.connect(self, timeout)
                break
            except CONNECTION_EXCEPTIONS as exc:
                error = exc
        if not self.connected.is_set() and self._fail_fast:
            await self.close()
            assert error is not None
            raise error
        await super().connect(timeout)
        self._report("connected to")

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not self._close_called:
            self._ring.advance()
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if self.connection_attempt > 1:
            self._report("reconnected to")

    def _report(self, what: str) -> None:
        if len(self._ring.nodes) > 1:
            nodes = self._ring.nodes
            log.info(
                f"broker {what} node {self.node} ({nodes.index(self.node) + 1} of {len(nodes)})",
                extra={"node": str(self.node)},
            )


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def connection_class(urls: Sequence[URL]) -> type[NodeListConnection]:
    """A NodeListConnection over these nodes (in this order)."""
    nodes = tuple(node_of(url) for url in urls)
    return type("NodeListConnection", (NodeListConnection,), {"NODES": nodes})


async def connect_robust(amqp_url: str, **kwargs: Any) -> AbstractRobustConnection:
    """aio_pika.connect_robust for AMQP_URL: one URL exactly as before, a list over its
    nodes. Keyword arguments are aio-pika's."""
    urls = parse_nodes(amqp_url)
    connection: AbstractRobustConnection
    if len(urls) == 1:
        connection = await aio_pika.connect_robust(amqp_url, **kwargs)
    else:
        node_list = connection_class(urls)
        connection = await aio_pika.connect_robust(urls[0], connection_class=node_list, **kwargs)
    return connection


async def connect(amqp_url: str, **kwargs: Any) -> AbstractConnection:
    """aio_pika.connect (no reconnection; commands and tools) for AMQP_URL: the nodes in
    order, the first that answers; the last node's error when none does."""
    urls = parse_nodes(amqp_url)
    for url in urls[:-1]:
        try:
            first: AbstractConnection = await aio_pika.connect(url, **kwargs)
            return first
        except CONNECTION_EXCEPTIONS:
            log.info("broker node %s did not answer; trying the next", node_of(url))
    last: AbstractConnection = await aio_pika.connect(
        amqp_url if len(urls) == 1 else urls[-1], **kwargs
    )
    return last


def broker_url(amqp_url: str) -> str:
    """The URL FastStream's RabbitBroker is built with: AMQP_URL itself, or the first node's
    of a list (see `fail_over`)."""
    urls = parse_nodes(amqp_url)
    return amqp_url if len(urls) == 1 else str(urls[0])


def fail_over(broker: RabbitBroker, amqp_url: str) -> RabbitBroker:
    """Make the broker's connection go round AMQP_URL's nodes (nothing changes for one URL).

    FastStream 0.7 passes its connection keyword arguments to aio_pika.connect_robust and has
    no option of its own for several hosts or for the connection class, hence the one entry
    added to them here."""
    urls = parse_nodes(amqp_url)
    if len(urls) > 1:
        broker._connection_kwargs["connection_class"] = connection_class(urls)
    return broker
