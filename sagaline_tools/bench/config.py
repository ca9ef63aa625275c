"""What a benchmark run measures and how big each measurement is (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

SECTIONS: tuple[str, ...] = (
    "baseline",
    "minimal",
    "orchestrator",
    "e2e",
    "latency",
    "scale",
    "timers",
)
"""In run order: the minimal step runs just before the orchestrator, which is measured against
it."""

STEPS_PER_ORDER = 4
"""History rows of a successful order saga: started, paid, reserved, shipped."""

COMMANDS_PER_ORDER = 3
"""Commands a successful order saga sends: ProcessPayment, ReserveInventory, CreateShipment."""

HOPS_PER_ORDER = 7
"""Consume-transact-publish-ack hops of a successful saga: 4 orchestrator steps + 3 workers."""


@dataclass(frozen=True)
class Sizes:
    messages: int = 20_000
    """Messages the bare relay baseline moves from queue A to queue B."""
    orders: int = 3_000
    """Orders fed with the stub worker (sections minimal, orchestrator and scale)."""
    e2e_orders: tuple[int, ...] = (1_000, 3_000)
    """Orders run end to end through the real workers, one run per size, each from empty
    tables: the first is the end-to-end figure, the later ones its growth."""
    latency_seconds: float = 20.0
    """How long the steady load of the latency section is offered."""
    finished: int = 200_000
    """Finished sagas seeded before the scale run."""
    live: int = 20_000
    """Live sagas seeded before the scale run."""
    timers: int = 20_000
    """Sagas with a step-timeout timer already due when the orchestrator starts."""


FULL = Sizes(
    messages=50_000,
    orders=10_000,
    e2e_orders=(2_000, 10_000, 30_000),
    latency_seconds=30.0,
    finished=1_000_000,
    live=100_000,
    timers=100_000,
)
"""The sizes the goals are stated for (issue "Performance")."""

QUICK = Sizes(
    messages=400,
    orders=60,
    e2e_orders=(30, 60),
    latency_seconds=2.0,
    finished=1_000,
    live=100,
    timers=300,
)
"""A smoke run: every section end to end in well under a minute; figures mean little."""


@dataclass(frozen=True)
class BenchConfig:
    sizes: Sizes = field(default_factory=Sizes)
    sections: tuple[str, ...] = SECTIONS
    relay_batch: int = 64
    relay_max_wait_ms: float = 5.0
    relay_prefetch: int = 128
    latency_fraction: float = 0.5
    """Offered load of the latency section as a fraction of the orchestrator's rate alone,
    measured again at the start of each latency round."""
    latency_rate: float | None = None
    """Transitions/s to offer in every latency round instead (no rate measured first)."""
    process_env: tuple[tuple[str, str], ...] = ()
    """Extra environment for the sagaline processes (e.g. SAGALINE_PREFETCH=64)."""
    random_ids: bool = False
    """Orders carry random (version 4) saga and message ids instead of version 7 ones
    (contracts.ids): what a publisher that ignores the README's advice sends."""
    database_settings: tuple[tuple[str, str], ...] = ()
    """PostgreSQL settings of the run's database (ALTER DATABASE ... SET), e.g.
    plan_cache_mode=force_custom_plan: every connection of the run starts with them."""
    keep: bool = False
    seed_history: bool = True
    """Seed history, inbox and outbox rows in proportion to the seeded sagas (4 per finished)."""
    quick: bool = False
    repeat: int = 1
    """Rounds of the baseline, minimal step and orchestrator measurements; the median is
    reported."""
    section_timeout: float | None = None
    """Seconds a section may take before it counts as failed (default: 120 quick, 3600)."""

    @property
    def section_limit(self) -> float:
        if self.section_timeout is not None:
            return self.section_timeout
        return 120.0 if self.quick else 3600.0

    def with_sizes(self, **changes: int | float | tuple[int, ...]) -> BenchConfig:
        return replace(self, sizes=replace(self.sizes, **changes))  # type: ignore[arg-type]


class ConfigError(ValueError):
    """Options that do not make a runnable benchmark."""


def parse_only(value: str | None) -> tuple[str, ...]:
    """Sections named in `--only a,b`, in run order; every section when None or empty.

    The scale section measures its own empty-table reference right after the seeded run, so
    it needs no other section.
    """
    if value is None or not value.strip():
        return SECTIONS
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    chosen = set(names)
    return tuple(s for s in SECTIONS if s in chosen)


def parse_env(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` pairs for the benchmarked processes."""
    result = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum():
            raise ConfigError(f"--env expects KEY=VALUE, got {pair!r}")
        result.append((key, value))
    return tuple(result)


def parse_counts(value: str) -> tuple[int, ...]:
    """`2000,10000,30000` -> (2000, 10000, 30000)."""
    try:
        counts = tuple(int(part.replace("_", "")) for part in value.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated whole numbers, got {value!r}") from None
    if not counts or min(counts) < 1:
        raise ConfigError(f"expected one or more sizes of at least 1, got {value!r}")
    return counts


def parse_database_settings(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`name=value` PostgreSQL settings (names are checked here; values are quoted literals)."""
    result = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"--db-setting expects name=value, got {pair!r}")
        result.append((name.lower(), value))
    return tuple(result)


def validate(config: BenchConfig) -> None:
    sizes = config.sizes
    for name in ("messages", "orders", "timers"):
        if getattr(sizes, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if not sizes.e2e_orders or min(sizes.e2e_orders) < 1:
        raise ConfigError("--e2e-orders needs one or more sizes of at least 1")
    if sizes.finished < 0 or sizes.live < 0:
        raise ConfigError("--finished and --live cannot be negative")
    if config.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    if sizes.latency_seconds <= 0:
        raise ConfigError("--latency-seconds must be positive")
