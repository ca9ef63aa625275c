"""A broker outage in a real worker's logs: one WARNING when the link drops, one INFO with the
outage's length when it is back, and no ERROR line from the reconnect attempts in between.

The worker reaches the shared broker through a TCP proxy of this test's own on a free loopback
port; stopping the proxy drops the worker's connections (and only them: other tests share the
broker), starting it again on the same port lets the robust connections back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from consumers import WorkerSettings, build_app
from consumers.testing import running
from sagaline.settings import Settings
from tests.conftest import delete_namespace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

OUTAGE_S = 6.0  # longer than the 5 s reconnect interval: attempts fail meanwhile


class TcpProxy:
    """Forwards 127.0.0.1:port to the broker; `stop` closes the listener and every link."""

    def __init__(self, target: URL) -> None:
        self.target_host, self.target_port = target.host or "127.0.0.1", target.port or 5672
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()  # as a dropped link: no AMQP close, no FIN handshake
        self._writers.clear()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.transport.abort()


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[TcpProxy]:
    value = TcpProxy(URL(settings.amqp_url))
    await value.start()
    try:
        yield value
    finally:
        await value.stop()


@pytest.fixture
async def proxied(settings: Settings, proxy: TcpProxy) -> AsyncIterator[Settings]:
    """Settings whose broker is the proxy, in a namespace of this test's own."""
    url = str(URL(settings.amqp_url).with_port(proxy.port).with_host("127.0.0.1"))
    own = settings.model_copy(
        update={"amqp_url": url, "namespace": f"{settings.namespace}-link-{uuid.uuid4().hex[:6]}"}
    )
    try:
        yield own
    finally:
        await delete_namespace(settings.model_copy(update={"namespace": own.namespace}))


async def test_an_outage_is_one_warning_and_one_info(
    proxied: Settings, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = build_app("payments", proxied, WorkerSettings(fail_commands=frozenset()))
    async with running(app):
        caplog.clear()
        await proxy.stop()
        await asyncio.sleep(OUTAGE_S)
        await proxy.start()
        async with asyncio.timeout(30):  # reconnect_interval is 5 s: one or two attempts
            while not [r for r in caplog.records if r.name == "sagaline.link" and r.levelno == 20]:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the other connection's callbacks, any late lines
        seen = list(caplog.records)

    ours = [(r.levelname, r.getMessage()) for r in seen if r.name == "sagaline.link"]
    assert ours[0] == ("WARNING", "broker connection lost; reconnecting")
    (level, restored) = ours[1]
    assert level == "INFO" and restored.startswith("broker connection restored after ")
    assert len(ours) == 2
    outage = next(r for r in seen if r.name == "sagaline.link" and r.levelno == logging.INFO)
    assert outage.outage_seconds >= OUTAGE_S  # type: ignore[attr-defined]
    # Nothing else at WARNING or above: no ERROR per attempt, no traceback per connection.
    # (r.msg, not r.getMessage(): some libraries' arguments cannot be formatted afterwards.)
    others = [(r.name, r.msg) for r in seen if r.levelno >= logging.WARNING]
    assert others == [("sagaline.link", "broker connection lost; reconnecting")]
