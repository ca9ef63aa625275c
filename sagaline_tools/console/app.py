"""The console's web application (Starlette): pages, login, and the forms that act.

Every page needs a session; every POST that acts also needs the session's CSRF token and the
rights for the action (actions.py). Errors are pages with a status and one line saying why,
never a traceback; no payload value is logged (only the method, path and status).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aio_pika
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from contracts.routes import WORKER_COMMANDS
from contracts.topology import ORCHESTRATOR
from orchestrator.admin import InvalidRequest, SagaAdmin, SagaNotFound
from orchestrator.app import build_store
from orchestrator.engine import OperatorRefused
from orchestrator.timer_admin import TimerAdmin
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_engine
from sagaline.messaging.parking import ParkingQueues
from sagaline.settings import Settings
from sagaline.tls import amqp_connect_options
from sagaline_tools.console import queries
from sagaline_tools.console.accounts import AccountError, Accounts, Session
from sagaline_tools.console.actions import Actions, Actor, BadRequest, Refused
from sagaline_tools.console.diagram_svg import svg
from sagaline_tools.console.index import FeedIngest, Reconciler
from sagaline_tools.console.replay import JobError, ReplayJobs
from sagaline_tools.console.rights import Action, Verdict, decide
from sagaline_tools.console.runner import JobLoop
from sagaline_tools.console.settings import ConsoleSettings
from sagaline_tools.console.tables import approvals

log = logging.getLogger("sagaline.console")

HERE = Path(__file__).parent
SESSION_COOKIE = "sagaline_session"
LOGIN_CSRF_COOKIE = "sagaline_login_csrf"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class Services:
    settings: Settings
    console: ConsoleSettings
    engine: AsyncEngine
    admin: SagaAdmin
    accounts: Accounts
    actions: Actions
    jobs: ReplayJobs
    consumers: list[str]
    clock: Callable[[], datetime]


class Problem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
)


def _age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago (or, for a future time, how long until): 45s, 3m07s, 2h15m, 4d03h."""
    if value is None:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    prefix = "in " if seconds < 0 else ""
    days, rest = divmod(abs(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{prefix}{days}d{hours:02d}h"
    if hours:
        return f"{prefix}{hours}h{minutes:02d}m"
    if minutes:
        return f"{prefix}{minutes}m{secs:02d}s"
    return f"{prefix}{secs}s"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


templates.filters["age"] = _age
templates.filters["when"] = _when


def parse_duration(value: str | None) -> timedelta | None:
    if not value:
        return None
    value = value.strip().lower()
    total, number = 0, ""
    for char in value:
        if char.isdigit():
            number += char
        elif char in _UNITS and number:
            total += int(number) * _UNITS[char]
            number = ""
        else:
            raise Problem(400, f"{value!r} is not a duration (use 90s, 15m, 2h, 1d)")
    if number or total <= 0:
        raise Problem(400, f"{value!r} is not a duration (use 90s, 15m, 2h, 1d)")
    return timedelta(seconds=total)


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    services: Services = request.app.state.services
    page = templates.get_template(name).render(
        session=session, read_only=services.console.read_only, request=request,
        flash=request.query_params.get("flash"), can=_can(services, session), **context,
    )  # fmt: skip
    return HTMLResponse(page, status_code=status, headers=_SECURITY_HEADERS)


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _can(services: Services, session: Session | None) -> Callable[[str], bool]:
    def can(action: str) -> bool:
        if session is None or services.console.read_only:
            return False
        verdict = decide(session.role, Action(action), four_eyes=services.console.four_eyes)
        return verdict.verdict is not Verdict.REFUSED

    return can


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """A page or form behind a login; a POST also needs the session's CSRF token."""

    async def wrapped(request: Request) -> Response:
        services: Services = request.app.state.services
        session = await services.accounts.session(request.cookies.get(SESSION_COOKIE, ""))
        if session is None:
            if request.method == "GET":
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                return RedirectResponse(f"/login?next={target}", status_code=303)
            return _problem(request, 401, "log in first")
        request.state.session = session
        if request.method == "POST":
            form = await request.form()
            request.state.form = form
            if form.get("csrf") != session.csrf_token:
                return _problem(
                    request, 403, "the form's CSRF token is missing or wrong; reload the page"
                )
        try:
            return await handler(request)
        except Problem as exc:
            return _problem(request, exc.status, exc.message)
        except Refused as exc:
            return _problem(request, 403, str(exc))
        except (BadRequest, InvalidRequest, JobError) as exc:
            return _problem(request, 400, str(exc))
        except SagaNotFound as exc:
            return _problem(request, 404, str(exc))
        except OperatorRefused as exc:
            return _problem(request, 409, str(exc))

    return wrapped


def _problem(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "problem.html", status=status, message=message, status_code=status)


def actor(request: Request) -> Actor:
    session: Session = request.state.session
    return Actor(session.operator, session.role)


def form_text(request: Request, name: str, default: str = "") -> str:
    value = request.state.form.get(name, default)
    return value if isinstance(value, str) else default


def redirect(link: str | None, message: str) -> RedirectResponse:
    target = link or "/"
    joiner = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{joiner}{urlencode({'flash': message})}", status_code=303)


# --- login ------------------------------------------------------------------------------------


async def login_page(request: Request, error: str = "", status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or uuid.uuid4().hex
    response = render(
        request, "login.html", status=status, error=error, login_csrf=token,
        next=_safe_next(request.query_params.get("next")),
    )  # fmt: skip
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


async def login(request: Request) -> Response:
    services: Services = request.app.state.services
    form = await request.form()
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not token or form.get("login_csrf") != token:
        return await login_page(request, "the login form expired; try again", 403)
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    client = request.client.host if request.client else "?"
    try:
        session_token, session = await services.accounts.login(name, password, client)
    except AccountError as exc:
        status = 429 if "too many" in str(exc) else 401
        log.info("login refused", extra={"operator": name[:100], "status": status})
        return await login_page(request, str(exc), status)
    log.info("login", extra={"operator": session.operator})
    response = RedirectResponse(_safe_next(str(form.get("next", ""))), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, session_token, httponly=True, samesite="strict", secure=_secure(request),
        max_age=int((session.expires_at - services.clock()).total_seconds()),
    )  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@page
async def logout(request: Request) -> Response:
    services: Services = request.app.state.services
    await services.accounts.logout(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _secure(request: Request) -> bool:
    services: Services = request.app.state.services
    return not services.console.insecure_cookies


def _safe_next(value: str | None) -> str:
    """Only a path on this site (no scheme, no host, no //): never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


# --- pages ------------------------------------------------------------------------------------


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
    rows = await queries.search_sagas(s.engine, f, s.clock(), sorted(WORKFLOWS), after)
    next_link = None
    if len(rows) == queries.PAGE:
        last = rows[-1]
        params = {k: v for k, v in q.items() if k not in ("after", "flash")}
        params["after"] = f"{last.updated_at.isoformat()}|{last.id}"
        next_link = "/sagas?" + urlencode(params)
    states = sorted({st.value for m in WORKFLOWS.values() for st in m.states})
    return render(
        request, "sagas.html", rows=rows, q=q, workflows=sorted(WORKFLOWS), states=states,
        next_link=next_link, now=s.clock(),
    )  # fmt: skip


@page
async def saga_page(request: Request) -> Response:
    s: Services = request.app.state.services
    view = await s.admin.show(request.path_params["ref"])
    summary = view.summary
    machine = WORKFLOWS.get(summary.workflow)
    diagram = svg(machine, summary.state) if machine is not None else ""
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
        timeline=timeline, finals=finals, now=s.clock(),
    )  # fmt: skip


@page
async def saga_action(request: Request) -> Response:
    s: Services = request.app.state.services
    action = Action(request.path_params["action"])
    if action not in (Action.RETRY, Action.SKIP, Action.COMPENSATE, Action.ABORT):
        raise Problem(404, "no such action")
    params = {"saga": request.path_params["ref"], "to": form_text(request, "to")}
    outcome = await s.actions.request(actor(request), action, params, form_text(request, "reason"))
    return redirect(outcome.link or f"/sagas/{request.path_params['ref']}", outcome.message)


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


def _selection(request: Request) -> dict[str, Any]:
    form = request.state.form
    ids = [int(v) for v in form.getlist("ids") if isinstance(v, str) and v.isdigit()]
    params: dict[str, Any] = {"ids": ids}
    # The park reason travels as park_reason: `reason` is the operator's why, on every form.
    for key, field in (
        ("queue", "queue"),
        ("reason", "park_reason"),
        ("fingerprint", "fingerprint"),
    ):
        value = form.get(field)
        if isinstance(value, str) and value:
            params[key] = value
    return params


@page
async def dlq_preview(request: Request) -> Response:
    """The dry run: what a replay or purge of this selection would take, before it does."""
    s: Services = request.app.state.services
    params = _selection(request)
    verb = form_text(request, "verb", "replay")
    if verb not in ("replay", "purge"):
        raise Problem(400, "choose replay or purge")
    f = queries.ParkedFilter(
        queue=params.get("queue"), reason=params.get("reason"),
        fingerprint=params.get("fingerprint"),
    )  # fmt: skip
    if not params["ids"] and not (f.queue and (f.reason or f.fingerprint)):
        raise Problem(400, "choose messages, or a group")
    rows = await queries.parked_selection(s.engine, f, params["ids"] or None)
    if not rows:
        raise Problem(400, "none of the chosen messages is parked (any more)")
    count = sum(r.copies for r in rows)
    session: Session = request.state.session
    decision = decide(
        session.role, Action(verb), size=count, bulk_limit=s.console.bulk_limit,
        four_eyes=s.console.four_eyes,
    )  # fmt: skip
    return render(
        request, "preview.html", rows=rows[:200], count=count, verb=verb, params=params,
        decision=decision, queues=sorted({r.queue for r in rows}),
    )  # fmt: skip


@page
async def dlq_act(request: Request) -> Response:
    s: Services = request.app.state.services
    verb = request.path_params["verb"]
    if verb not in ("replay", "purge"):
        raise Problem(404, "no such action")
    params = _selection(request)
    if verb == "replay":
        try:
            params["rate"] = float(form_text(request, "rate") or 50)
        except ValueError:
            raise Problem(400, "the rate is a number of messages per second") from None
        params["stop_on_failure"] = form_text(request, "stop_on_failure") == "1"
    outcome = await s.actions.request(
        actor(request), Action(verb), params, form_text(request, "reason")
    )
    return redirect(outcome.link or "/dlq", outcome.message)


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
async def job_control(request: Request) -> Response:
    s: Services = request.app.state.services
    params = {"job": int(request.path_params["id"]), "op": request.path_params["op"]}
    outcome = await s.actions.request(
        actor(request), Action.JOB_CONTROL, params, form_text(request, "reason")
    )
    return redirect(outcome.link, outcome.message)


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
async def timer_action(request: Request) -> Response:
    s: Services = request.app.state.services
    op = request.path_params["op"]
    params: dict[str, Any] = {
        "saga": request.path_params["ref"],
        "name": request.path_params["name"],
    }
    if op == "cancel":
        action = Action.TIMER_CANCEL
    elif op == "reschedule":
        action = Action.TIMER_RESCHEDULE
        params["due_at"] = _due_at(
            form_text(request, "due_at"), form_text(request, "due_in"), s.clock()
        )
    else:
        raise Problem(404, "no such timer action")
    outcome = await s.actions.request(actor(request), action, params, form_text(request, "reason"))
    return redirect(outcome.link, outcome.message)


def _due_at(at: str, after: str, now: datetime) -> str:
    if bool(at.strip()) == bool(after.strip()):
        raise Problem(400, "give the new due time as a time or as a duration from now")
    if after.strip():
        delta = parse_duration(after)
        assert delta is not None
        return (now + delta).isoformat()
    try:
        value = datetime.fromisoformat(at.strip())
    except ValueError:
        raise Problem(400, f"{at!r} is not an ISO-8601 time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # the form's datetime-local field is shown as UTC
    return value.isoformat()


@page
async def approvals_page(request: Request) -> Response:
    s: Services = request.app.state.services
    async with s.engine.connect() as conn:
        rows = (
            await conn.execute(select(approvals).order_by(approvals.c.id.desc()).limit(100))
        ).all()
    return render(request, "approvals.html", rows=rows)


@page
async def approval_decide(request: Request) -> Response:
    s: Services = request.app.state.services
    accept = request.path_params["op"] == "approve"
    outcome = await s.actions.approve(actor(request), int(request.path_params["id"]), accept=accept)
    return redirect(outcome.link or "/approvals", outcome.message)


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
