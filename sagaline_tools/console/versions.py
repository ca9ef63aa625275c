"""The console's workflow-versions page: the drain report, and `saga migrate` with its dry run.

The preview is the CLI's survey (counts per version and outcome, state moves, why sagas are
blocked) before anything changes; confirming runs the migration through actions.Actions, so
rights, the four-eyes setting and the audit are the same as for every other action.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from orchestrator.migrate_sagas import SagaMigrator, drain_report
from orchestrator.migration_checks import InvalidMigration, MigrationRequest, plan_request
from sagaline_tools.console.accounts import Session
from sagaline_tools.console.rights import Action, decide
from sagaline_tools.console.web import (
    Problem,
    Services,
    actor,
    form_text,
    page,
    redirect,
    render,
)


@page
async def versions_page(request: Request) -> Response:
    s: Services = request.app.state.services
    workflows = s.admin.store.workflows
    uses = await drain_report(s.engine, workflows)
    choices = {name: sorted(loaded) for name, loaded in workflows.versions.items()}
    return render(request, "versions.html", uses=uses, choices=choices)


def _params(request: Request) -> dict[str, Any]:
    """The migration the form asks for: one `old=new` or `field=value` per line."""
    to = form_text(request, "to").strip()
    limit = form_text(request, "limit").strip()
    if not to.isdigit() or (limit and not limit.isdigit()):
        raise Problem(400, "the version and the limit are whole numbers")
    return {
        "workflow": form_text(request, "workflow").strip(),
        "to": int(to),
        "maps": _lines(form_text(request, "maps")),
        "where": _lines(form_text(request, "where")),
        "limit": int(limit) if limit else None,
    }


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _request(s: Services, params: dict[str, Any]) -> MigrationRequest:
    try:
        return plan_request(
            s.admin.store.workflows, params["workflow"], params["to"], params["maps"],
            params["where"],
        )  # fmt: skip
    except InvalidMigration as exc:
        raise Problem(400, str(exc)) from None


@page
async def migrate_preview(request: Request) -> Response:
    """The dry run: what a migration would do, counted, before it does anything."""
    s: Services = request.app.state.services
    params = _params(request)
    report = await SagaMigrator(s.engine, clock=s.clock).survey(_request(s, params))
    session: Session = request.state.session
    decision = decide(session.role, Action.MIGRATE, four_eyes=s.console.four_eyes)
    return render(
        request, "migrate_preview.html", report=report.as_dict(), params=params,
        decision=decision,
    )  # fmt: skip


@page
async def migrate_act(request: Request) -> Response:
    s: Services = request.app.state.services
    params = _params(request)
    _request(s, params)  # refuse bad input before rights or approvals
    outcome = await s.actions.request(
        actor(request), Action.MIGRATE, params, form_text(request, "reason")
    )
    return redirect(outcome.link or "/versions", outcome.message)
