"""AMQP_URL as a list of nodes, with a real worker process on the real broker.

Two "nodes" are two TCP proxies of this test's own on free loopback ports, both forwarding to
the shared broker: stopping one drops every connection through it (and only those: other
tests share the broker), as a node that died would. The worker must move both of its
connections (FastStream's, which publishes replies, and sagaline's, which consumes commands)
to the other node and go on answering; and it must start when the first node is already down.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractChannel
from faststream.asgi import AsgiFastStream
from yarl import URL

from consumers import WorkerSettings, build_app
from consumers.testing import ReplyListener, delete_namespace, running, send_command
from contracts import order as o
from contracts.envelope import new_envelope
from sagaline.messaging.nodes import connect_robust
from sagaline.service import confirm_channel, connect_amqp
from sagaline.settings import Settings
from tests.integration.test_link_log import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CONNECTIONS = 2
"""Robust connections per process: FastStream's broker and sagaline's own."""


@pytest.fixture
async def proxies(settings: Settings) -> AsyncIterator[tuple[TcpProxy, TcpProxy]]:
    pair = (TcpProxy(URL(settings.amqp_url)), TcpProxy(URL(settings.amqp_url)))
    for proxy in pair:
        await proxy.start()
    try:
        yield pair
    finally:
        for proxy in pair:
            await proxy.stop()


def node_url(settings: Settings, proxy: TcpProxy) -> str:
    return str(URL(settings.amqp_url).with_host("127.0.0.1").with_port(proxy.port))


@pytest.fixture
async def listed(settings: Settings, proxies: tuple[TcpProxy, TcpProxy]) -> AsyncIterator[Settings]:
    """Settings naming both proxies in AMQP_URL, in a broker namespace of this test's own."""
    own = settings.model_copy(
        update={
            "amqp_url": ",".join(node_url(settings, p) for p in proxies),
            "namespace": f"{settings.namespace}-nodes-{uuid.uuid4().hex[:6]}",
        }
    )
    yield own
    direct = settings.model_copy(update={"namespace": own.namespace})
    connection = await connect_amqp(direct)
    try:
        await delete_namespace(await connection.channel(), direct.topology, ["payments"])
    finally:
        await connection.close()


@pytest.fixture
async def channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """The test's own channel, straight to the broker (no proxy in between)."""
    connection = await connect_amqp(settings)
    try:
        yield await confirm_channel(connection)
    finally:
        await connection.close()


@pytest.fixture(autouse=True)
def node_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sagaline.nodes")


def payments(listed: Settings) -> AsgiFastStream:
    return build_app("payments", listed, WorkerSettings(fail_commands=frozenset()))


def node_lines(caplog: pytest.LogCaptureFixture, proxy: TcpProxy) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sagaline.nodes" and f"127.0.0.1:{proxy.port} " in r.getMessage()
    ]


async def lines_about(
    caplog: pytest.LogCaptureFixture, proxy: TcpProxy, count: int, within: float
) -> list[str]:
    deadline = time.monotonic() + within
    while len(found := node_lines(caplog, proxy)) < count:
        assert time.monotonic() < deadline, f"only {found} within {within:.0f}s"
        await asyncio.sleep(0.05)
    return found


async def answers(listed: Settings, channel: AbstractChannel) -> None:
    """The worker takes a command and its reply comes back (consume and publish both work)."""
    command = o.ProcessPayment(
        order_id=f"nodes-{uuid.uuid4().hex[:10]}",
        customer_id="c-nodes",
        amount_cents=1_000,
        currency="EUR",
        card_token="tok_ok",
    )
    envelope = new_envelope(command, correlation_id=uuid.uuid4())
    async with ReplyListener(channel, listed.topology) as replies:
        await send_command(channel, listed.topology, envelope)
        (reply,) = await replies.wait(envelope.message_id, within=20)
    assert isinstance(reply.envelope.payload, o.PaymentProcessed)


async def test_a_worker_moves_to_the_next_node_when_its_node_is_lost(
    listed: Settings,
    proxies: tuple[TcpProxy, TcpProxy],
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = proxies
    async with running(payments(listed)):
        connected = await lines_about(caplog, first, CONNECTIONS, within=10)
        assert all(line.endswith("(1 of 2)") for line in connected), connected
        await answers(listed, channel)

        await first.stop()  # node 1 is gone: every link through it drops at once
        moved = await lines_about(caplog, second, CONNECTIONS, within=20)
        assert all(line.startswith("broker reconnected to node") for line in moved), moved
        await answers(listed, channel)


async def test_a_worker_starts_when_the_first_node_is_down(
    listed: Settings,
    proxies: tuple[TcpProxy, TcpProxy],
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = proxies
    await first.stop()
    async with running(payments(listed)):
        connected = await lines_about(caplog, second, CONNECTIONS, within=10)
        assert all(line.endswith("(2 of 2)") for line in connected), connected
        await answers(listed, channel)


async def test_no_node_answering_fails_at_once_with_the_last_error() -> None:
    dead = "amqp://guest:guest@127.0.0.1:1/,amqp://guest:guest@127.0.0.1:2/"
    began = time.monotonic()
    with pytest.raises(ConnectionError):
        await connect_robust(dead)
    assert time.monotonic() - began < 3.0  # each node tried once, no reconnect interval
