"""Private RabbitMQ and PostgreSQL instances for the outage scenarios (6 and 7).

Stopping or restarting the shared services would break everyone else's work, so these
scenarios start their own: a RabbitMQ node with a unique name on free ports, with its data,
logs, config, plugins file and Erlang cookie under a temporary directory; and a PostgreSQL
cluster made with initdb (trust auth, fsync off) on a free port. `missing()` says why a
scenario must be skipped on machines without the binaries.

RabbitMQ on this machine: /usr/sbin/rabbitmq-server is a wrapper that switches to the
`rabbitmq` user (dropping our environment) and cd's to /var/lib/rabbitmq, so the scripts in
/usr/lib/rabbitmq/bin are run directly. They honour RABBITMQ_NODENAME, RABBITMQ_NODE_PORT,
RABBITMQ_DIST_PORT, RABBITMQ_MNESIA_BASE, RABBITMQ_LOG_BASE, RABBITMQ_ENABLED_PLUGINS_FILE,
RABBITMQ_CONFIG_FILE and RABBITMQ_PID_FILE; RABBITMQ_CONF_ENV_FILE points at an empty file so
that /etc/rabbitmq/rabbitmq-env.conf (which sets the shared node's NODENAME) is not read. HOME
points into the temporary directory: the node creates its Erlang cookie there on first start,
and rabbitmqctl run with the same HOME finds the same cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from tests.faults.harness import eventually

RABBIT_SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin")
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/pgsql/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_dir_with(dirs: tuple[str, ...], *names: str) -> Path | None:
    for candidate in dirs:
        path = Path(candidate)
        if all((path / name).exists() for name in names):
            return path
    return None


# --- RabbitMQ --------------------------------------------------------------------------------


@dataclass
class PrivateRabbit:
    root: Path
    scripts: Path
    node: str = field(default_factory=lambda: f"sagaline-faults-{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        if _first_dir_with(RABBIT_SCRIPT_DIRS, "rabbitmq-server", "rabbitmqctl") is None:
            return f"rabbitmq-server/rabbitmqctl not found in {', '.join(RABBIT_SCRIPT_DIRS)}"
        if shutil.which("erl") is None:
            return "erl (Erlang) is not on PATH"
        return None

    @classmethod
    def create(cls, extra_config: str = "") -> PrivateRabbit:
        """A node on free ports; `extra_config` lines are appended to its rabbitmq.conf."""
        scripts = _first_dir_with(RABBIT_SCRIPT_DIRS, "rabbitmq-server", "rabbitmqctl")
        assert scripts is not None
        root = Path(tempfile.mkdtemp(prefix="sagaline-rabbit-"))
        value = cls(root, scripts)
        (root / "home").mkdir()
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq-env.conf").write_text("")
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{value.port}\n"
            "log.console = false\n"
            "log.file.level = warning\n" + extra_config
        )
        return value

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        root = self.root
        return {
            **os.environ,
            "HOME": str(root / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
        }

    def _spawn(self) -> subprocess.Popen[bytes]:
        with (self.root / "server.out").open("ab") as log:
            return subprocess.Popen(
                [str(self.scripts / "rabbitmq-server")],
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, within: float = 60.0) -> None:
        server = self.server = self._spawn()

        async def listening() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"private RabbitMQ exited: {self.tail()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        # The AMQP listener opens last in the boot sequence; users may not include guest (a
        # node that loads definitions at boot creates no default user), so no login here.
        await eventually(listening, within=within, what="the private RabbitMQ node", interval=0.3)
        await self.ctl("await_startup", within=within)

    async def ctl(self, *args: str, within: float = 60.0) -> str:
        process = await asyncio.create_subprocess_exec(
            str(self.scripts / "rabbitmqctl"),
            "-n",
            self.node,
            *args,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(within):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        text = out.decode(errors="replace")
        if process.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {text[-1500:]}")
        return text

    async def stop(self, within: float = 60.0) -> None:
        """Stop the node (the whole Erlang VM) and wait for its process to end."""
        await self.ctl("stop", within=within)
        if self.server is not None:
            await asyncio.to_thread(self.server.wait, within)

    async def close_all_connections(self) -> None:
        await self.ctl("close_all_connections", "fault injection")

    async def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.server is not None and self.server.poll() is None:
                await self.stop(within=30)
        if self.server is not None and self.server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        try:
            text = (self.root / "server.out").read_text(errors="replace")
        except OSError:
            return "<no output>"
        return "\n".join(text.splitlines()[-lines:])


# --- PostgreSQL ------------------------------------------------------------------------------


@dataclass
class PrivatePostgres:
    root: Path
    bindir: Path
    port: int = field(default_factory=free_port)
    user: str | None = None
    """The OS user to run the server as (initdb refuses root); None: the current user."""

    @staticmethod
    def missing() -> str | None:
        if _first_dir_with(PG_BIN_DIRS, "initdb", "pg_ctl", "postgres", "psql") is None:
            return f"initdb/pg_ctl/postgres/psql not found in {', '.join(PG_BIN_DIRS)}"
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no `postgres` user to run initdb as"
        return None

    @classmethod
    def create(cls) -> PrivatePostgres:
        bindir = _first_dir_with(PG_BIN_DIRS, "initdb", "pg_ctl", "postgres", "psql")
        assert bindir is not None
        root = Path(tempfile.mkdtemp(prefix="sagaline-pg-"))
        user = "postgres" if os.geteuid() == 0 else None
        if user is not None:
            shutil.chown(root, user)
        value = cls(root, bindir, user=user)
        value._run(
            "initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        return value

    def url(self, database: str, user: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql://{user}@{host}:{self.port}/{database}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def enable_tls(self, cert: Path, key: Path, hba: str) -> None:
        """Before start: serve TLS with this certificate; replace pg_hba.conf with `hba`."""
        for source, name in ((cert, "server.crt"), (key, "server.key")):
            target = self.data / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self.user is not None:
                shutil.chown(target, self.user)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        (self.data / "pg_hba.conf").write_text(hba)

    def psql(self, database: str, *args: str) -> str:
        """psql as the superuser over the local socket (ON_ERROR_STOP)."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.root),
             "-p", str(self.port), "-U", "postgres", "-d", database, *args],
            user=self.user,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"psql failed: {result.stderr[-1500:]}")
        return result.stdout

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [str(self.bindir / tool), *args],
            user=self.user,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"{tool} failed: {result.stdout[-800:]} {result.stderr[-800:]}")

    async def start(self, listen: str = "127.0.0.1", **settings: str) -> None:
        """`listen`: listen_addresses (comma-separated); `settings`: more -c name=value."""
        # fsync off is safe here: only an OS crash loses what the OS was given, and the
        # scenario kills PostgreSQL, not the machine. synchronous_commit must stay on: with it
        # off, a commit is acknowledged before its WAL leaves PostgreSQL's memory, and an
        # immediate stop loses it (the suite caught exactly that when it was off).
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={listen} -c fsync=off"
            " -c full_page_writes=off -c max_connections=200"
        ) + "".join(f" -c {name}={value}" for name, value in settings.items())
        await asyncio.to_thread(
            self._run,
            "pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
            "-w", "-t", "60", "-o", options, "start",
        )  # fmt: skip

    async def stop(self, mode: str = "immediate") -> None:
        """`immediate`: no shutdown checkpoint, every connection cut (a crash, for clients)."""
        await asyncio.to_thread(
            self._run, "pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop"
        )

    async def terminate_backends(self, database: str) -> int:
        """pg_terminate_backend for every other connection to `database`; how many."""
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await conn.close()
        return len(rows)

    async def destroy(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop("fast")
        shutil.rmtree(self.root, ignore_errors=True)


def wait_port_closed(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
