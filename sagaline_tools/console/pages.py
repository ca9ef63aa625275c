"""The console's pages (GET): overview, sagas, one saga, dead letters, jobs, timers, approvals,
audit; and the health endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchestrator.engine.versioning import definition_hash
from orchestrator.timer_admin import TimerAdmin
from sagaline_tools.console import queries
from sagaline_tools.console.diagram_svg import svg
from sagaline_tools.console.tables import approvals
from sagaline_tools.console.web import (
    Problem,
    Services,
    page,
    parse_duration,
    render,
)


@page
async def overview(request: Request) -> Response:
    s: Services = request.app.state.services
    data = await queries.overview(s.engine, s.clock(), s.console.stuck_after)
    seconds = max(int(s.console.stuck_after.total_seconds()), 1)
    stuck = f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
    return render(request, "overview.html", o=data, stuck=stuck)


@page
async def sagas(request: Request) -> Response:
    s: Services = request.app.state.services
    q = request.query_params
    f = queries.SagaFilter(
        workflow=q.get("workflow") or None, state=q.get("state") or None,
        key=(q.get("key") or "").strip() or None, stuck_for=parse_duration(q.get("stuck")),
        active=q.get("active") == "1", older_than=parse_duration(q.get("older")),
    )  # fmt: skip
    after = None
    if q.get("after"):
        try:
            at, _, saga_id = q["after"].partition("|")
            after = (datetime.fromisoformat(at), uuid.UUID(saga_id))
        except ValueError:
            raise Problem(400, "bad page cursor") from None
    rows = await queries.search_sagas(
        s.engine, f, s.clock(), sorted(s.admin.store.workflows), after
    )
    next_link = None
    if len(rows) == queries.PAGE:
        last = rows[-1]
        params = {k: v for k, v in q.items() if k not in ("after", "flash")}
        params["after"] = f"{last.updated_at.isoformat()}|{last.id}"
        next_link = "/sagas?" + urlencode(params)
    # Every loaded version's states: sagas of an older version are still in theirs.
    workflows = s.admin.store.workflows
    states = sorted({st.value for m in workflows.machines() for st in m.states})
    return render(
        request, "sagas.html", rows=rows, q=q, workflows=sorted(workflows), states=states,
        next_link=next_link, now=s.clock(),
    )  # fmt: skip


@page
async def saga_page(request: Request) -> Response:
    s: Services = request.app.state.services
    view = await s.admin.show(request.path_params["ref"])
    summary = view.summary
    # The diagram of the version the saga runs under (a newer one may lack its state).
    machine = s.admin.store.workflows.version(summary.workflow, summary.definition_version)
    diagram = svg(machine, summary.state) if machine is not None else ""
    definition = definition_hash(machine) if machine is not None else None
    parked_rows = await queries.parked_page(
        s.engine, queries.ParkedFilter(saga_id=summary.id), limit=200
    )
    audit_rows = await queries.saga_audit(s.engine, summary.id)
    timeline = sorted(
        [("history", e.at, e) for e in view.history] + [("audit", a.at, a) for a in audit_rows],
        key=lambda t: t[1],
    )
    finals = sorted(machine.final) if machine is not None else []
    return render(
        request, "saga.html", view=view, s=summary, diagram=diagram, parked=parked_rows,
        timeline=timeline, finals=finals, now=s.clock(), definition=definition,
    )  # fmt: skip


@page
async def dlq_groups(request: Request) -> Response:
    s: Services = request.app.state.services
    return render(request, "dlq.html", groups=await queries.groups(s.engine), now=s.clock())


def _parked_filter(q: Any) -> queries.ParkedFilter:
    saga = q.get("saga") or None
    try:
        saga_id = uuid.UUID(saga) if saga else None
    except ValueError:
        raise Problem(400, "saga must be a saga id") from None
    return queries.ParkedFilter(
        queue=q.get("queue") or None, reason=q.get("reason") or None,
        fingerprint=q.get("fingerprint") or None, saga_id=saga_id,
    )  # fmt: skip


@page
async def dlq_messages(request: Request) -> Response:
    s: Services = request.app.state.services
    q = request.query_params
    f = _parked_filter(q)
    before = int(q["before"]) if q.get("before", "").isdigit() else None
    rows = await queries.parked_page(s.engine, f, before)
    total = await queries.parked_count(s.engine, f)
    next_link = None
    if len(rows) == queries.PAGE:
        params = {k: v for k, v in q.items() if k not in ("before", "flash")}
        next_link = "/dlq/messages?" + urlencode({**params, "before": rows[-1].id})
    return render(
        request, "messages.html", rows=rows, f=f, total=total, next_link=next_link,
        now=s.clock(), bulk_limit=s.console.bulk_limit,
    )  # fmt: skip


@page
async def dlq_message(request: Request) -> Response:
    s: Services = request.app.state.services
    row = await queries.parked_message(s.engine, int(request.path_params["id"]))
    if row is None:
        raise Problem(404, "that message is no longer parked")
    body = row.body.decode("utf-8", "replace")
    return render(request, "message.html", m=row, body=body)


@page
async def jobs_page(request: Request) -> Response:
    s: Services = request.app.state.services
    return render(request, "jobs.html", jobs=await s.jobs.recent(100))


@page
async def job_page(request: Request) -> Response:
    s: Services = request.app.state.services
    job = await s.jobs.get(int(request.path_params["id"]))
    return render(request, "job.html", job=job)


@page
async def job_progress(request: Request) -> Response:
    s: Services = request.app.state.services
    job = await s.jobs.get(int(request.path_params["id"]))
    return JSONResponse(job.as_dict(), headers={"Cache-Control": "no-store"})


@page
async def timers_page(request: Request) -> Response:
    s: Services = request.app.state.services
    q = request.query_params
    due = {"due": True, "future": False}.get(q.get("when", ""))
    offset = int(q["offset"]) if q.get("offset", "").isdigit() else 0
    rows = await TimerAdmin(s.admin).list(
        due=due, saga=q.get("saga") or None, name=q.get("name") or None,
        limit=queries.PAGE, offset=offset,
    )  # fmt: skip
    next_link = None
    if len(rows) == queries.PAGE:
        params = {k: v for k, v in q.items() if k not in ("offset", "flash")}
        next_link = "/timers?" + urlencode({**params, "offset": offset + queries.PAGE})
    return render(request, "timers.html", rows=rows, q=q, next_link=next_link)


@page
async def approvals_page(request: Request) -> Response:
    s: Services = request.app.state.services
    async with s.engine.connect() as conn:
        rows = (
            await conn.execute(select(approvals).order_by(approvals.c.id.desc()).limit(100))
        ).all()
    return render(request, "approvals.html", rows=rows)


@page
async def audit_page(request: Request) -> Response:
    s: Services = request.app.state.services
    return render(request, "audit.html", rows=await queries.recent_audit(s.engine, 200))


async def healthz(request: Request) -> Response:
    return Response("ok", media_type="text/plain")


async def readyz(request: Request) -> Response:
    s: Services = request.app.state.services
    try:
        async with s.engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM console.operators LIMIT 1"))
    except Exception:
        return Response("database unreachable or not migrated", status_code=503)
    return Response("ok", media_type="text/plain")
