"""`python -m consumers <worker>` as an OS process: it gets ready, works, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumers import WORKERS
from consumers.testing import ReplyListener, delete_namespace, send_command
from contracts import order as o
from contracts.envelope import new_envelope
from sagaline.service import confirm_channel, connect_amqp
from sagaline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return int(response.status)
    except OSError:
        return None


@pytest.fixture
async def psettings(settings: Settings) -> AsyncIterator[Settings]:
    own = settings.model_copy(update={"namespace": f"{settings.namespace}-p{uuid.uuid4().hex[:6]}"})
    yield own
    connection = await connect_amqp(own)
    try:
        await delete_namespace(await connection.channel(), own.topology, WORKERS)
    finally:
        await connection.close()


async def test_worker_process_serves_and_stops_on_sigterm(
    psettings: Settings, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "AMQP_URL": psettings.amqp_url,
        "DATABASE_URL": psettings.database_url,
        "SAGALINE_NAMESPACE": psettings.namespace,
        "SAGALINE_RETRY_DELAYS": ",".join(str(d) for d in psettings.retry_delays),
        "SAGALINE_HTTP_HOST": "127.0.0.1",
        "SAGALINE_HTTP_PORT": str(port),
        "SAGALINE_FAIL_COMMANDS": "",
    }
    log_path = tmp_path / "shipping.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumers",
            "shipping",
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with asyncio.timeout(30):
            while await asyncio.to_thread(_status, port, "/readyz") != 200:
                assert process.returncode is None, log_path.read_text(errors="replace")
                await asyncio.sleep(0.2)
        assert await asyncio.to_thread(_status, port, "/healthz") == 200

        connection = await connect_amqp(psettings)
        try:
            channel = await confirm_channel(connection)
            async with ReplyListener(channel, psettings.topology) as replies:
                command = new_envelope(
                    o.CancelShipment(order_id=f"order-{uuid.uuid4().hex[:12]}"),
                    correlation_id=uuid.uuid4(),
                )
                await send_command(channel, psettings.topology, command)
                (reply,) = await replies.wait(command.message_id, within=15)
            assert isinstance(reply.envelope.payload, o.ShipmentCancelled)
        finally:
            await connection.close()

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(psettings.graceful_timeout_seconds + 10):
            await process.wait()
        output = log_path.read_text(errors="replace")
        # uvicorn re-raises the signal once it has shut down, so SIGTERM is also a clean exit.
        assert process.returncode in (0, -signal.SIGTERM), output
        assert '"msg": "stopped gracefully"' in output
        assert "Traceback" not in output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
