"""Saga metrics for Prometheus, beside FastStream's own message metrics.

Counters and histograms are updated by the store, relay and timer loop as they work; gauges
that describe the whole database (active sagas by state, outbox backlog) are refreshed by a
small background sampler, so a scrape never waits for a query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.engine import Decision
from orchestrator.store.tables import instances, outbox, timers
from sagaline.background import BackgroundLoop

_STATE_SECONDS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600, 6 * 3600, 86400, 7 * 86400)


class SagaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.transitions = Counter(
            "sagaline_transitions_total",
            "Saga state transitions.",
            ["workflow", "from_state", "to_state"],
            registry=registry,
        )
        self.time_in_state = Histogram(
            "sagaline_time_in_state_seconds",
            "Time a saga spent in a state before leaving it.",
            ["workflow", "state"],
            buckets=_STATE_SECONDS,
            registry=registry,
        )
        self.outcomes = Counter(
            "sagaline_steps_total",
            "Saga steps by outcome (started, transitioned, ignored, stale, finished, duplicate).",
            ["workflow", "outcome"],
            registry=registry,
        )
        self.compensations_started = Counter(
            "sagaline_compensations_started_total",
            "Sagas that began compensating.",
            ["workflow"],
            registry=registry,
        )
        self.compensations_failed = Counter(
            "sagaline_compensations_failed_total",
            "Sagas whose compensation was not confirmed in time.",
            ["workflow"],
            registry=registry,
        )
        self.conflicts = Counter(
            "sagaline_concurrency_conflicts_total",
            "Saga steps decided again because another transaction changed the saga first.",
            registry=registry,
        )
        guesses = Counter(
            "sagaline_snapshot_guesses_total",
            "Batches decided from the snapshot cache without reading their sagas, by outcome: "
            "held (the write went through) or missed (decided again from a read).",
            ["outcome"],
            registry=registry,
        )
        self._guess_outcomes = (guesses.labels("missed"), guesses.labels("held"))
        self.active = Gauge(
            "sagaline_active_sagas",
            "Unfinished sagas by workflow and state.",
            ["workflow", "state"],
            registry=registry,
        )
        self.active_by_version = Gauge(
            "sagaline_active_sagas_by_version",
            "Unfinished sagas by workflow and the version of it they run under (a version at 0 "
            "can be retired; `sagaline saga versions` is the same report).",
            ["workflow", "version"],
            registry=registry,
        )
        self.oldest_active = Gauge(
            "sagaline_oldest_active_saga_seconds",
            "Seconds since the least recently changed unfinished saga in this state last changed "
            "(stuck sagas; `sagaline saga list --stuck-for` names them).",
            ["workflow", "state"],
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "sagaline_outbox_backlog", "Outbox rows not yet published.", registry=registry
        )
        self.outbox_oldest_age = Gauge(
            "sagaline_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none).",
            registry=registry,
        )
        self.outbox_published = Counter(
            "sagaline_outbox_published_total", "Outbox rows published.", registry=registry
        )
        self.timer_lag = Histogram(
            "sagaline_timer_lag_seconds",
            "How late a timer fired after it came due.",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
            registry=registry,
        )
        self.timers_due = Gauge(
            "sagaline_timers_due", "Timers due now and not yet fired.", registry=registry
        )
        self.parked = Gauge(
            "sagaline_parked_messages",
            "Messages in parking queues by queue and reason.",
            ["queue", "reason"],
            registry=registry,
        )

    def observe_guess(self, held: bool) -> None:
        self._guess_outcomes[held].inc()


class DatabaseSampler(BackgroundLoop):
    """Refreshes the database-wide gauges every `interval` seconds."""

    name = "metrics-sampler"

    def __init__(self, engine: AsyncEngine, metrics: SagaMetrics, interval: float = 5.0) -> None:
        super().__init__(interval)
        self.engine = engine
        self.metrics = metrics
        self._known: set[tuple[str, str]] = set()
        self._known_versions: set[tuple[str, str]] = set()

    async def run_once(self) -> bool:
        await self.sample()
        return False

    async def sample(self) -> None:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        instances.c.workflow,
                        instances.c.state,
                        instances.c.definition_version,
                        func.count(),
                        func.min(instances.c.updated_at),
                    )
                    .where(instances.c.finished_at.is_(None))
                    .group_by(
                        instances.c.workflow, instances.c.state, instances.c.definition_version
                    )
                )
            ).all()
            backlog = (
                await conn.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.published_at.is_(None)
                    )
                )
            ).one()
            due = await conn.scalar(
                select(func.count()).select_from(timers).where(timers.c.due_at <= func.now())
            )
            now = await conn.scalar(select(func.now()))
        by_state: dict[tuple[str, str], tuple[int, Any]] = {}
        by_version: dict[tuple[str, str], int] = {}
        for workflow, state, version, count, least_recent in rows:
            key = (workflow, str(version))
            by_version[key] = by_version.get(key, 0) + count
            known = by_state.get((workflow, state))
            if known is not None:
                count, least_recent = known[0] + count, min(known[1], least_recent)
            by_state[(workflow, state)] = (count, least_recent)
        for (workflow, state), (count, least_recent) in by_state.items():
            self.metrics.active.labels(workflow, state).set(count)
            idle = max((now - least_recent).total_seconds(), 0.0)
            self.metrics.oldest_active.labels(workflow, state).set(idle)
        for gone in self._known - by_state.keys():
            self.metrics.active.labels(*gone).set(0)
            self.metrics.oldest_active.labels(*gone).set(0)
        self._known = set(by_state)
        for (workflow, version), count in by_version.items():
            self.metrics.active_by_version.labels(workflow, version).set(count)
        for gone in self._known_versions - by_version.keys():
            self.metrics.active_by_version.labels(*gone).set(0)
        self._known_versions = set(by_version)
        count, oldest = backlog
        self.metrics.outbox_backlog.set(count)
        self.metrics.outbox_oldest_age.set((now - oldest).total_seconds() if oldest else 0.0)
        self.metrics.timers_due.set(due or 0)


def observe_step(
    metrics: SagaMetrics,
    workflow: str,
    decision: Decision,
    previous_update: datetime | None,
    now: datetime,
    compensating: str,
    compensation_failed: str,
) -> None:
    """Count one committed step (called after commit, never for rolled-back attempts)."""
    metrics.outcomes.labels(workflow, decision.outcome.value).inc()
    if not decision.changes_saga or decision.from_state == decision.to_state:
        return
    metrics.transitions.labels(workflow, decision.from_state or "", decision.to_state).inc()
    if decision.from_state is not None and previous_update is not None:
        spent = max((now - previous_update).total_seconds(), 0.0)
        metrics.time_in_state.labels(workflow, decision.from_state).observe(spent)
    if decision.to_state == compensating:
        metrics.compensations_started.labels(workflow).inc()
    if decision.to_state == compensation_failed:
        metrics.compensations_failed.labels(workflow).inc()
