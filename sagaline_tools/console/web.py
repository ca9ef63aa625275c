"""What every page and form of the console shares: the services, rendering with the
security headers, the login-and-CSRF guard (`page`), and the helpers forms use.

Every page needs a session; every POST that acts also needs the session's CSRF token. Errors
are pages with a status and one line saying why, never a traceback; no payload value is
logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from orchestrator.admin import InvalidRequest, SagaAdmin, SagaNotFound
from orchestrator.engine import OperatorRefused
from sagaline.settings import Settings
from sagaline_tools.console.accounts import Accounts, Session
from sagaline_tools.console.actions import Actions, Actor, BadRequest, Refused
from sagaline_tools.console.jobs import JobError, JobNotFound, ReplayJobs
from sagaline_tools.console.rights import Action, Verdict, decide
from sagaline_tools.console.settings import ConsoleSettings

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
        except (SagaNotFound, JobNotFound) as exc:
            return _problem(request, 404, str(exc))
        except (BadRequest, InvalidRequest, JobError) as exc:
            return _problem(request, 400, str(exc))
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
