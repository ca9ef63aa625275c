"""Settings from environment variables. Defaults work against a local RabbitMQ and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts.topology import Topology
from sagaline.amqp_nodes import is_node_list, parse_nodes


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGALINE_", extra="ignore", frozen=True)

    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        validation_alias=AliasChoices("AMQP_URL", "SAGALINE_AMQP_URL"),
    )
    """One broker URL, or a comma-separated list of the URLs of one cluster's nodes, alike but
    for host and port (sagaline/amqp_nodes.py): tried in order, then round-robin on reconnect."""
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/sagaline",
        validation_alias=AliasChoices("DATABASE_URL", "SAGALINE_DATABASE_URL"),
    )
    namespace: str = Field(default="sagaline", pattern=r"^[a-z][a-z0-9_\-]{0,40}$")
    """Prefix of every exchange and queue name."""

    retry_delays: Annotated[tuple[float, ...], NoDecode] = (1.0, 5.0, 30.0)
    """Seconds between delivery attempts of a transiently failing message, one queue per delay."""

    delivery_limit: int = Field(default=20, ge=1, le=1000)
    prefetch: int | None = Field(default=None, ge=1, le=5000)
    """Unacknowledged deliveries per process; default batch_size x batch_workers x 2."""
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    step_timeout_seconds: float = Field(default=120.0, gt=0)
    """A command with no reply after this long counts as failed (must exceed the retry ladder)."""

    batch_size: int = Field(default=64, ge=1, le=1000)
    """Most messages applied in one database transaction (orchestrator and workers)."""
    batch_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    """How long a batch waits to fill before it is applied anyway."""
    batch_workers: int = Field(default=2, ge=1, le=32)
    """Batches in flight at once in one process."""
    stage_log: str | None = None
    """Bench only: append each batch's stage timings to this file (sagaline.messaging.stages)."""
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_ping_after_idle_seconds: float = Field(default=10.0, ge=0)
    """Orchestrator and workers: a pooled connection idle this long is pinged before use
    (0: before every use). Their batches are held and retried through an outage, so a dead
    connection in steady use costs one retry; other processes always ping."""
    startup_declare_seconds: float = Field(default=60.0, ge=0, le=3600)
    """At start-up, how long a process keeps declaring its queues while a queue's home node is
    down or inaccessible (a cluster node away) before it gives up and exits."""
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    relay_poll_seconds: float = Field(default=1.0, gt=0)
    dispatch_lease_seconds: float = Field(default=5.0, gt=0, le=3600)
    """The orchestrator publishes a batch's commands itself right after its commit; for this
    long the relay loop leaves those rows to it. A process that dies in between delays them by
    at most this (a redelivered duplicate sweeps them at once); a publish slower than this may
    go out twice (consumers deduplicate by message id)."""
    snapshot_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    """How many sagas the orchestrator remembers as it last committed them, so that a batch of
    replies to its own commands skips its read (orchestrator/store/snapshot_cache.py); 0 turns
    it off. A stale entry costs one write, decided again from a read, never a wrong step."""
    gc_young_threshold: int = Field(default=10_000, ge=100, le=10_000_000)
    """Net new container objects between two collections of the youngest generation (the first
    number of `gc.set_threshold`; CPython's own default is 700). A batch builds thousands of
    objects that die by reference counting once it is done; at 700 the collector walked them
    mid-batch and promoted them to older generations, which it then walked again: 7-8 s of
    pauses in a 30,000-order run, against 0.1 s at 10,000 (sagaline/gc_tuning.py)."""
    timer_poll_seconds: float = Field(default=1.0, gt=0)
    timer_batch_size: int = Field(default=1000, ge=1, le=10_000)
    """Due timers fired per round (one transaction). Matters when many fall due at once, e.g.
    after an outage: 1,000 fired 2,068/s where 200 fired 1,593/s (30k due timers, bench)."""
    metrics_interval_seconds: float = Field(default=5.0, gt=0)
    """How often database-wide gauges (active sagas, outbox backlog) are refreshed."""
    parking_scan_seconds: float = Field(default=30.0, gt=0)
    """How often the orchestrator counts parked messages by queue and reason."""
    graceful_timeout_seconds: float = Field(default=15.0, gt=0)
    """How long a stopping process waits for in-flight messages (compose's stop grace is above)."""
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    workflows: str = Field(
        default="orchestrator.workflows:WORKFLOWS", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
    )
    """`module:attribute` of the Workflows the orchestrator runs and the CLI reads, with every
    version of each still loaded (README: Changing a workflow)."""

    # TLS and database roles (sagaline/tls.py; README "Security").
    amqp_ca_file: str | None = None
    """amqps:// only: CA bundle the broker's certificate must chain to (unset: system CAs)."""
    amqp_cert_file: str | None = None
    """amqps:// only: client certificate (PEM) for mutual TLS, with amqp_key_file."""
    amqp_key_file: str | None = None
    db_sslmode: (
        Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None
    ) = None
    """PostgreSQL TLS, libpq's sslmode values. Unset: the driver's default (PGSSLMODE, else
    prefer). verify-full checks the server certificate's chain and host name."""
    db_sslrootcert: str | None = None
    """CA bundle the database server's certificate must chain to (require/verify-*)."""
    db_sslcert: str | None = None
    """Client certificate (PEM) for the database, with db_sslkey."""
    db_sslkey: str | None = None
    db_runtime_role: str = Field(default="sagaline_runtime", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """The role migrations grant data access (no DDL) to; processes log in as a member of it."""

    # Who may send what (sagaline/messaging/senders.py; README "Security").
    command_senders: Annotated[frozenset[str], NoDecode] = frozenset()
    """Broker users whose commands a worker executes, by the message's RabbitMQ-validated
    `user_id` (comma-separated). Empty: any sender (development)."""
    reply_senders: Annotated[frozenset[str], NoDecode] = frozenset()
    """Broker users whose replies (the events answering commands) the orchestrator takes.
    Empty: any sender."""

    @field_validator("command_senders", "reply_senders", mode="before")
    @classmethod
    def _split_users(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("amqp_url")
    @classmethod
    def _check_node_list(cls, value: str) -> str:
        if is_node_list(value):
            parse_nodes(value)  # NodeListError (a ValueError): one line, no values quoted
        return value

    @property
    def broker_user(self) -> str | None:
        """The broker user this process logs in as (from AMQP_URL): the `user_id` it sets on
        what it publishes. None when the URL names no user (e.g. EXTERNAL authentication)."""
        return url_user(self.amqp_url)

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @property
    def topology(self) -> Topology:
        return Topology(
            namespace=self.namespace,
            retry_delays_ms=tuple(int(d * 1000) for d in self.retry_delays),
            delivery_limit=self.delivery_limit,
        )

    @property
    def step_timeout(self) -> timedelta:
        return timedelta(seconds=self.step_timeout_seconds)

    @property
    def sqlalchemy_url(self) -> str:
        """DATABASE_URL in the form SQLAlchemy's asyncpg dialect expects."""
        url = self.database_url
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        return url


def url_user(amqp_url: str) -> str | None:
    """The user name in an AMQP URL (the first one of a comma-separated list), if it has one."""
    first = amqp_url.split(",", 1)[0].strip()
    try:
        user = urlsplit(first).username
    except ValueError:
        return None
    return unquote(user) if user else None


def settings_problems(error: ValidationError) -> str:
    """One line naming each invalid setting and what is wrong with it. Never the value: it may
    be a secret (a URL with a password), which pydantic's str(error) would quote."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "settings"
        # An alias (AMQP_URL) is reported as such, a field as its SAGALINE_<NAME> variable.
        name = field if field.isupper() or not item["loc"] else f"SAGALINE_{field.upper()}"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(message if message.startswith(name) else f"{name}: {message}")
    return "; ".join(problems)
