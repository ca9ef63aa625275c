"""Operator actions from the console: rights, approvals, then the same code the CLI runs.

Every action names its operator and reason; saga and timer actions write the saga's history
entry (orchestrator.admin, orchestrator.timer_admin), message and job actions the audit trail,
with `operator:<name>` as actor either way. An action that needs a second operator is stored
as an approval request with its parameters, and runs, as its requester with the approver named
in the reason, when someone else approves it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.admin import SagaAdmin, check_request
from orchestrator.timer_admin import TimerAdmin
from sagaline.messaging.parking import ParkingQueues
from sagaline_tools.console import audit
from sagaline_tools.console.index import forget
from sagaline_tools.console.jobs import Item, JobError, ReplayJobs
from sagaline_tools.console.keys import key_of
from sagaline_tools.console.queries import ParkedFilter, parked_selection
from sagaline_tools.console.rights import Action, Verdict, decide
from sagaline_tools.console.tables import approvals, replay_jobs

CONSOLE_RUNNER = "console"
DEFAULT_RATE = 50.0


class Refused(Exception):
    """The operator may not do this (rights, read-only mode, own approval); HTTP 403."""


class BadRequest(Exception):
    """The request itself is wrong (unknown saga, empty selection, bad time); HTTP 400/409."""


@dataclass(frozen=True)
class Actor:
    name: str
    role: str


@dataclass(frozen=True)
class Outcome:
    message: str
    link: str | None = None


class Actions:
    def __init__(
        self,
        engine: AsyncEngine,
        admin: SagaAdmin,
        parking: ParkingQueues | None,
        *,
        bulk_limit: int,
        four_eyes: bool,
        read_only: bool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.admin = admin
        self.timers = TimerAdmin(admin)
        self.parking = parking
        self.jobs = ReplayJobs(engine, clock)
        self.bulk_limit = bulk_limit
        self.four_eyes = four_eyes
        self.read_only = read_only
        self.clock = clock

    async def request(
        self, actor: Actor, action: Action, params: dict[str, Any], reason: str
    ) -> Outcome:
        """Check rights, then run the action, or store it for a second operator's approval."""
        if self.read_only:
            raise Refused("this console runs read-only: it has no write credentials")
        try:
            _, reason = check_request(actor.name, reason)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        size = await self._size(action, params)
        decision = decide(
            actor.role, action, size=size, bulk_limit=self.bulk_limit, four_eyes=self.four_eyes
        )
        if decision.verdict is Verdict.REFUSED:
            raise Refused(decision.why or f"{actor.role}s may not {action.value}")
        if decision.verdict is Verdict.NEEDS_APPROVAL:
            return await self._ask_approval(actor, action, params, reason, decision.why)
        return await self.run(actor.name, action, params, reason)

    async def approve(self, actor: Actor, approval_id: int, *, accept: bool) -> Outcome:
        if self.read_only:
            raise Refused("this console runs read-only: it has no write credentials")
        decision = decide(actor.role, Action.APPROVE)
        if decision.verdict is not Verdict.ALLOWED:
            raise Refused(decision.why or "you may not decide approvals")
        now = self.clock()
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(approvals).where(approvals.c.id == approval_id).with_for_update()
                )
            ).first()
            if row is None or row.status != "pending":
                raise BadRequest(f"approval {approval_id} is not pending")
            if row.requested_by == actor.name:
                raise Refused("a second operator must approve: you asked for this one")
            await conn.execute(
                update(approvals)
                .where(approvals.c.id == approval_id)
                .values(
                    status="approved" if accept else "rejected",
                    decided_by=actor.name,
                    decided_at=now,
                )
            )
            await audit.record(
                conn, actor.name, "approve" if accept else "reject", f"approval {approval_id}",
                row.reason, details={"approval": approval_id, "action": row.action}, at=now,
            )  # fmt: skip
        if not accept:
            return Outcome(f"rejected approval {approval_id}")
        reason = f"{row.reason} (approved by {actor.name})"
        try:
            outcome = await self.run(row.requested_by, Action(row.action), row.params, reason)
            result, status = outcome.message, "executed"
        except (BadRequest, Refused, JobError) as exc:
            outcome, result, status = Outcome(f"approved, but it failed: {exc}"), str(exc), "failed"
        async with self.engine.begin() as conn:
            await conn.execute(
                update(approvals)
                .where(approvals.c.id == approval_id)
                .values(status=status, result=result[:500])
            )
        return outcome

    async def _ask_approval(
        self, actor: Actor, action: Action, params: dict[str, Any], reason: str, why: str
    ) -> Outcome:
        now = self.clock()
        async with self.engine.begin() as conn:
            approval_id = (
                await conn.execute(
                    approvals.insert()
                    .values(
                        action=action.value, params=params, summary=_summary(action, params),
                        requested_by=actor.name, reason=reason, requested_at=now,
                        status="pending",
                    )
                    .returning(approvals.c.id)
                )
            ).scalar_one()  # fmt: skip
            await audit.record(
                conn, actor.name, "request-approval", f"approval {approval_id}", reason,
                details={"approval": approval_id, "action": action.value}, at=now,
            )  # fmt: skip
        return Outcome(f"{why}: asked as approval {approval_id}", "/approvals")

    async def run(
        self, operator: str, action: Action, params: dict[str, Any], reason: str
    ) -> Outcome:
        """Perform an allowed action as `operator` (rights already checked)."""
        saga = str(params.get("saga", ""))
        if action is Action.RETRY:
            r = await self.admin.retry(saga, operator, reason)
            return Outcome(f"re-sent {len(r.commands)} command(s)", f"/sagas/{r.saga_id}")
        if action in (Action.SKIP, Action.COMPENSATE, Action.ABORT):
            to = params.get("to") or None
            r = await self.admin.act(saga, action.value, operator, reason, to)  # type: ignore[arg-type]
            return Outcome(f"{action.value}: {r.from_state} → {r.to_state}", f"/sagas/{r.saga_id}")
        if action is Action.TIMER_CANCEL:
            t = await self.timers.cancel(saga, str(params["name"]), operator, reason)
            return Outcome(f"cancelled timer {t.timer}", f"/sagas/{t.saga_id}")
        if action is Action.TIMER_RESCHEDULE:
            due = datetime.fromisoformat(str(params["due_at"]))
            t = await self.timers.reschedule(saga, str(params["name"]), due, operator, reason)
            return Outcome(
                f"rescheduled timer {t.timer} to {due.isoformat()}", f"/sagas/{t.saga_id}"
            )
        if action is Action.REPLAY:
            return await self._replay(operator, params, reason)
        if action is Action.PURGE:
            return await self._purge(operator, params, reason)
        if action is Action.JOB_CONTROL:
            return await self._control(operator, params, reason)
        if action is Action.MIGRATE:
            return await self._migrate(operator, params, reason)
        raise BadRequest(f"unknown action {action.value}")

    async def _size(self, action: Action, params: dict[str, Any]) -> int:
        if action in (Action.REPLAY, Action.PURGE):
            return sum(r.copies for r in await self._rows(params))
        return 1

    async def _rows(self, params: dict[str, Any]) -> list[Any]:
        f = ParkedFilter(
            queue=params.get("queue") or None,
            reason=params.get("reason") or None,
            fingerprint=params.get("fingerprint") or None,
        )
        ids = [int(i) for i in params.get("ids", [])]
        if not ids and not (f.queue and (f.reason or f.fingerprint or params.get("all"))):
            raise BadRequest("choose messages, or a group (queue, reason and error)")
        rows = await parked_selection(self.engine, f, ids)
        if not rows:
            raise BadRequest("none of the chosen messages is parked (any more)")
        if len({r.queue for r in rows}) > 1:
            raise BadRequest("choose messages of one parking queue at a time")
        return rows

    async def _replay(self, operator: str, params: dict[str, Any], reason: str) -> Outcome:
        rows = await self._rows(params)
        queue = rows[0].queue
        items = [
            Item(r.message_key, r.replays, r.message_id, r.message_type, r.saga_id) for r in rows
        ]
        rate = float(params.get("rate") or DEFAULT_RATE)
        selection = {k: params.get(k) for k in ("ids", "reason", "fingerprint") if params.get(k)}
        try:
            job = await self.jobs.create(
                queue, selection, items, rate=rate,
                stop_on_failure=bool(params.get("stop_on_failure")), operator=operator,
                reason=reason, runner=CONSOLE_RUNNER,
            )  # fmt: skip
        except JobError as exc:
            raise BadRequest(str(exc)) from None
        async with self.engine.begin() as conn:
            for item in items:
                if item.saga_id is not None:
                    target = f"{queue} {item.message_type} {item.message_id}"
                    await audit.record(
                        conn, operator, "dlq-replay", target, reason, saga_id=item.saga_id,
                        details={"job": job.id},
                    )  # fmt: skip
        return Outcome(
            f"replay job {job.id}: {job.total} message(s) at {rate:g}/s", f"/dlq/jobs/{job.id}"
        )

    async def _purge(self, operator: str, params: dict[str, Any], reason: str) -> Outcome:
        if self.parking is None:
            raise Refused("this console has no broker credentials to purge with")
        rows = await self._rows(params)
        queue = rows[0].queue
        wanted = {(r.message_key, r.replays): r for r in rows}
        removed = []
        async with self.parking.walking(queue) as walk:
            while wanted and (taken := await walk.next()) is not None:
                message, p = taken
                row = wanted.pop((key_of(message, p), p.replays), None)
                if row is not None:
                    await walk.purge(message)
                    removed.append(row)
        async with self.engine.begin() as conn:
            await forget(conn, queue, [(r.message_key, r.replays) for r in removed])
            await forget(conn, queue, [(r.message_key, r.replays) for r in wanted.values()])
            for r in removed:
                await audit.record(
                    conn, operator, "dlq-purge", f"{queue} {r.message_type} {r.message_id}",
                    reason, saga_id=r.saga_id,
                    details={"queue": queue, "message_id": r.message_id, "reason": r.reason},
                )  # fmt: skip
        gone = f"; {len(wanted)} no longer parked" if wanted else ""
        return Outcome(f"purged {len(removed)} message(s) from {queue}{gone}", "/dlq")

    async def _control(self, operator: str, params: dict[str, Any], reason: str) -> Outcome:
        job_id, op = int(params["job"]), str(params["op"])
        try:
            await self.jobs.control(job_id, op, operator, reason)
        except JobError as exc:
            raise BadRequest(str(exc)) from None
        if op == "resume":
            # Resumed from the console: the console's job loop runs it.
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(replay_jobs)
                    .where(replay_jobs.c.id == job_id)
                    .values(runner=CONSOLE_RUNNER)
                )
        return Outcome(f"replay job {job_id}: {op}", f"/dlq/jobs/{job_id}")

    async def _migrate(self, operator: str, params: dict[str, Any], reason: str) -> Outcome:
        """`sagaline saga migrate` from the console: the same checks, one saga per transaction."""
        from orchestrator.migrate_sagas import SagaMigrator
        from orchestrator.migration_checks import InvalidMigration, plan_request

        try:
            request = plan_request(
                self.admin.store.workflows, str(params["workflow"]), int(params["to"]),
                params.get("maps", ()), params.get("where", ()),
            )  # fmt: skip
        except InvalidMigration as exc:
            raise BadRequest(str(exc)) from None
        report = await SagaMigrator(self.engine, clock=self.clock).migrate(
            request, operator, reason, limit=params.get("limit")
        )
        blocked = f"; {report.blocked} blocked" if report.blocked else ""
        return Outcome(
            f"migrated {report.migrated} saga(s) to {request.workflow} v{request.to_version}"
            f"{blocked}",
            "/versions",
        )


def _summary(action: Action, params: dict[str, Any]) -> str:
    if action is Action.MIGRATE:
        return f"migrate {params.get('workflow')} sagas to v{params.get('to')}"
    if action in (Action.REPLAY, Action.PURGE):
        what = f"{len(params['ids'])} chosen" if params.get("ids") else "the group"
        where = params.get("queue") or "their queue"
        return f"{action.value} {what} message(s) of {where}"
    return f"{action.value} saga {params.get('saga', '?')}"
