"""The console's web application (Starlette): routes, and the process around them (database,
broker, the parked-message ingest and reconciler, the replay-job loop).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR
from orchestrator.admin import SagaAdmin
from orchestrator.app import build_store
from sagaline.db import create_engine
from sagaline.messaging.parking import ParkingQueues
from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options
from sagaline_tools.console.accounts import Accounts
from sagaline_tools.console.actions import Actions
from sagaline_tools.console.forms import (
    approval_decide,
    dlq_act,
    dlq_preview,
    job_control,
    login,
    login_page,
    logout,
    saga_action,
    timer_action,
)
from sagaline_tools.console.index import FeedIngest, Reconciler
from sagaline_tools.console.jobs import ReplayJobs
from sagaline_tools.console.pages import (
    approvals_page,
    audit_page,
    dlq_groups,
    dlq_message,
    dlq_messages,
    healthz,
    job_page,
    job_progress,
    jobs_page,
    overview,
    readyz,
    saga_page,
    sagas,
    timers_page,
)
from sagaline_tools.console.runner import JobLoop
from sagaline_tools.console.settings import ConsoleSettings
from sagaline_tools.console.versions import migrate_act, migrate_preview, versions_page
from sagaline_tools.console.web import (
    HERE,
    Services,
    log,
)

ROUTES = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/", overview),
    Route("/sagas", sagas),
    Route("/sagas/{ref}", saga_page),
    Route("/sagas/{ref}/{action}", saga_action, methods=["POST"]),
    Route("/dlq", dlq_groups),
    Route("/dlq/messages", dlq_messages),
    Route("/dlq/messages/{id:int}", dlq_message),
    Route("/dlq/preview", dlq_preview, methods=["POST"]),
    Route("/dlq/{verb}", dlq_act, methods=["POST"]),
    Route("/dlq/jobs", jobs_page),
    Route("/dlq/jobs/{id:int}", job_page),
    Route("/dlq/jobs/{id:int}/progress", job_progress),
    Route("/dlq/jobs/{id:int}/{op}", job_control, methods=["POST"]),
    Route("/timers", timers_page),
    Route("/timers/{ref}/{name}/{op}", timer_action, methods=["POST"]),
    Route("/approvals", approvals_page),
    Route("/approvals/{id:int}/{op}", approval_decide, methods=["POST"]),
    Route("/audit", audit_page),
    Route("/versions", versions_page),
    Route("/versions/preview", migrate_preview, methods=["POST"]),
    Route("/versions/migrate", migrate_act, methods=["POST"]),
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


def build_app(
    settings: Settings,
    console: ConsoleSettings,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    background: bool = True,
) -> Starlette:
    """The console; `background=False` runs no ingest, reconciler or job loop (tests)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(settings, pool_size=5)
        store = build_store(settings, engine, clock=clock)
        admin = SagaAdmin(engine, store)
        names = [ORCHESTRATOR, *WORKER_COMMANDS]
        connection = None
        loops: list[Any] = []
        parking = None
        try:
            connection = await aio_pika.connect_robust(
                settings.amqp_url, **amqp_connect_options(settings)
            )
            parking = ParkingQueues(
                connection, settings.topology, names, user_id=settings.broker_user
            )
            if background:
                loops.append(FeedIngest(engine, connection, settings.topology, names))
                if not console.read_only:
                    jobs = ReplayJobs(engine, clock)
                    loops.append(Reconciler(engine, parking, interval=console.reconcile_seconds))
                    loops.append(JobLoop(jobs, parking))
        except Exception as exc:
            # Pages that read PostgreSQL still work; the broker's absence is shown on actions.
            log.warning("console without broker", extra={"error": type(exc).__name__})
        actions = Actions(
            engine, admin, None if console.read_only else parking,
            bulk_limit=console.bulk_limit, four_eyes=console.four_eyes,
            read_only=console.read_only, clock=clock,
        )  # fmt: skip
        app.state.services = Services(
            settings, console, engine, admin,
            Accounts(engine, clock, timedelta(hours=console.session_hours)), actions,
            ReplayJobs(engine, clock), names, clock,
        )  # fmt: skip
        for loop in loops:
            await loop.start()
        try:
            yield
        finally:
            for loop in reversed(loops):
                await loop.stop()
            for loop in loops:
                if isinstance(loop, FeedIngest):
                    await loop.close()
            if connection is not None:
                await connection.close()
            await engine.dispose()

    return Starlette(routes=ROUTES, lifespan=lifespan)
