"""The console's forms (POST): login and logout, the dry-run preview, and the actions, each
checked by actions.Actions for rights and approvals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sagaline_tools.console import queries
from sagaline_tools.console.accounts import AccountError, Session
from sagaline_tools.console.rights import Action, decide
from sagaline_tools.console.web import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Problem,
    Services,
    actor,
    form_text,
    log,
    page,
    parse_duration,
    redirect,
    render,
)


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
async def saga_action(request: Request) -> Response:
    s: Services = request.app.state.services
    actions = {a.value: a for a in (Action.RETRY, Action.SKIP, Action.COMPENSATE, Action.ABORT)}
    action = actions.get(request.path_params["action"])
    if action is None:
        raise Problem(404, "no such action")
    params = {"saga": request.path_params["ref"], "to": form_text(request, "to")}
    outcome = await s.actions.request(actor(request), action, params, form_text(request, "reason"))
    return redirect(outcome.link or f"/sagas/{request.path_params['ref']}", outcome.message)


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
async def job_control(request: Request) -> Response:
    s: Services = request.app.state.services
    params = {"job": int(request.path_params["id"]), "op": request.path_params["op"]}
    outcome = await s.actions.request(
        actor(request), Action.JOB_CONTROL, params, form_text(request, "reason")
    )
    return redirect(outcome.link, outcome.message)


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
async def approval_decide(request: Request) -> Response:
    s: Services = request.app.state.services
    if request.path_params["op"] not in ("approve", "reject"):
        raise Problem(404, "approve or reject")
    accept = request.path_params["op"] == "approve"
    outcome = await s.actions.approve(actor(request), int(request.path_params["id"]), accept=accept)
    return redirect(outcome.link or "/approvals", outcome.message)
