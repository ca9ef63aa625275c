"""The console's rights on real PostgreSQL (and the broker, for parked messages): every action
refused to the roles that lack it and to forms without the session's CSRF token, with nothing
changed; allowed actions write the same `operator:<name>` rows as the CLI; logins throttled;
the four-eyes mode and the read-only mode."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from orchestrator.engine import EngineConfig, Incoming
from orchestrator.store.saga_store import SagaStore
from orchestrator.store.tables import history, instances, timers
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from sagaline_tools.console.accounts import Accounts
from sagaline_tools.console.app import build_app
from sagaline_tools.console.index import FeedIngest, declare_feed
from sagaline_tools.console.settings import ConsoleSettings
from sagaline_tools.console.tables import approvals, audit, parked, replay_jobs
from tests.conftest import own_database
from tests.integration.console_support import declare, park, private_namespace
from tests.integration.support import order_submitted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PASSWORD = "correct horse battery"
ROLES = {"vera": "viewer", "olga": "operator", "otto": "operator", "ada": "admin"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
async def own(settings: Settings) -> AsyncIterator[Settings]:
    async with (
        own_database(settings, step_timeout_seconds=600.0) as db_settings,
        private_namespace(db_settings) as value,
    ):
        await declare(value)
        engine = create_unpooled_engine(value.sqlalchemy_url)
        accounts = Accounts(engine)
        for name, role in ROLES.items():
            await accounts.add(name, role, PASSWORD)
        await engine.dispose()
        yield value


@pytest.fixture
async def db(own: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(own.sqlalchemy_url)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE console.login_failures, console.parked"))
    yield engine
    await engine.dispose()


def client(own: Settings, **console: Any) -> TestClient:
    app = build_app(own, ConsoleSettings(**console), background=False)
    return TestClient(app, base_url="https://testserver", follow_redirects=False)


@pytest.fixture
def web(own: Settings) -> Iterator[TestClient]:
    with client(own, bulk_limit=2) as value:
        yield value


def login(c: TestClient, name: str, password: str = PASSWORD) -> Any:
    c.cookies.clear()
    page = c.get("/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert token is not None
    return c.post("/login", data={"name": name, "password": password, "login_csrf": token[1]})


def csrf(c: TestClient) -> str:
    found = CSRF.search(c.get("/").text)
    assert found is not None
    return found[1]


async def new_saga(own: Settings, db: AsyncEngine) -> str:
    store = SagaStore(db, own.topology, EngineConfig(step_timeout=own.step_timeout), WORKFLOWS)
    envelope = order_submitted()
    await store.handle(Incoming.from_envelope(envelope))
    return str(envelope.correlation_id)


async def state_and_history(db: AsyncEngine, saga: str) -> tuple[str, list[Any]]:
    async with db.connect() as conn:
        state = await conn.scalar(select(instances.c.state).where(instances.c.id == saga))
        rows = (
            await conn.execute(
                select(history).where(history.c.saga_id == saga).order_by(history.c.id)
            )
        ).all()
    return str(state), list(rows)


async def indexed(own: Settings, db: AsyncEngine, count: int) -> list[int]:
    """Park `count` messages and index them as the console's feed would; their row ids."""
    import aio_pika

    connection = await aio_pika.connect(own.amqp_url)
    try:
        await declare_feed(await connection.channel(), own.topology, ["orchestrator", "payments"])
        await park(own, count)
        ingest = FeedIngest(db, connection, own.topology, ["orchestrator", "payments"])
        async with asyncio.timeout(20):
            while ingest.ingested < count:
                await ingest.run_once()
        await ingest.close()
    finally:
        await connection.close()
    async with db.connect() as conn:
        return [
            int(i)
            for i in (await conn.execute(select(parked.c.id).order_by(parked.c.id))).scalars()
        ]


def act(c: TestClient, path: str, token: str | None, **data: Any) -> Any:
    form = {"reason": "ticket 42", **data}
    if token is not None:
        form["csrf"] = token
    return c.post(path, data=form)


async def test_login_sessions_and_throttling(web: TestClient, db: AsyncEngine) -> None:
    assert web.get("/").status_code == 303  # not logged in: to the login page
    assert web.get("/").headers["location"].startswith("/login")
    wrong = login(web, "olga", "wrong password!!")
    assert wrong.status_code == 401 and "unknown operator or wrong password" in wrong.text
    unknown = login(web, "nobody", PASSWORD)
    assert unknown.status_code == 401 and "unknown operator or wrong password" in unknown.text
    ok = login(web, "olga")
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    assert "olga (operator)" in web.get("/").text
    forged = web.post("/login", data={"name": "olga", "password": PASSWORD, "login_csrf": "x"})
    assert forged.status_code == 403
    for _ in range(5):
        login(web, "vera", "not the password")
    throttled = login(web, "vera")  # the right password, after five failures
    assert throttled.status_code == 429 and "too many failed logins" in throttled.text
    async with db.connect() as conn:
        stored = await conn.scalar(
            text("SELECT password_hash FROM console.operators WHERE name = 'ada'")
        )
    assert stored.startswith("scrypt$") and PASSWORD not in stored


async def test_every_action_is_refused_to_roles_that_lack_it(
    web: TestClient, own: Settings, db: AsyncEngine
) -> None:
    saga = await new_saga(own, db)
    ids = await indexed(own, db, 3)
    actions: dict[str, tuple[str, dict[str, Any]]] = {
        "retry": (f"/sagas/{saga}/retry", {}),
        "skip": (f"/sagas/{saga}/skip", {"to": "failed"}),
        "compensate": (f"/sagas/{saga}/compensate", {}),
        "abort": (f"/sagas/{saga}/abort", {}),
        "timer-cancel": (f"/timers/{saga}/step-timeout/cancel", {}),
        "timer-reschedule": (f"/timers/{saga}/step-timeout/reschedule", {"due_in": "2h"}),
        "replay": ("/dlq/replay", {"ids": ids[:1]}),
        "bulk-replay": ("/dlq/replay", {"ids": ids}),
        "purge": ("/dlq/purge", {"ids": ids[:1]}),
        "job-control": ("/dlq/jobs/1/pause", {}),
        "approve": ("/approvals/1/approve", {}),
    }
    refused = {
        "vera": set(actions),
        "olga": {"abort", "bulk-replay", "purge"},
    }
    before = await state_and_history(db, saga)
    for name, lacking in refused.items():
        assert login(web, name).status_code == 303
        token = csrf(web)
        for action in sorted(lacking):
            path, data = actions[action]
            response = act(web, path, token, **data)
            assert response.status_code == 403, (name, action, response.text[:300])
            expected = "viewers can look but not act" if name == "vera" else "needs an admin"
            assert expected in response.text, (name, action)
    # Nothing moved: no state change, no history or audit row, no job, nothing purged.
    assert await state_and_history(db, saga) == before
    async with db.connect() as conn:
        assert await conn.scalar(select(text("count(*)")).select_from(replay_jobs)) == 0
        assert await conn.scalar(select(text("count(*)")).select_from(audit)) == 0
        assert await conn.scalar(select(text("count(*)")).select_from(parked)) == 3
    # A viewer's page shows no action buttons at all.
    login(web, "vera")
    assert "/abort" not in web.get(f"/sagas/{saga}").text


async def test_forms_without_the_session_csrf_token_are_refused(
    web: TestClient, own: Settings, db: AsyncEngine
) -> None:
    saga = await new_saga(own, db)
    login(web, "ada")
    before = await state_and_history(db, saga)
    for token in (None, "not-the-token"):
        for path in (f"/sagas/{saga}/abort", f"/timers/{saga}/step-timeout/cancel", "/dlq/purge",
                     "/logout"):  # fmt: skip
            response = act(web, path, token)
            assert response.status_code == 403, (path, token)
            assert "CSRF token is missing or wrong" in response.text
    assert await state_and_history(db, saga) == before
    # Another operator's token does not do either.
    other = client(own)
    with other:
        login(other, "olga")
        foreign = csrf(other)
    assert act(web, f"/sagas/{saga}/abort", foreign).status_code == 403


async def test_allowed_actions_write_the_same_rows_as_the_cli(
    web: TestClient, own: Settings, db: AsyncEngine
) -> None:
    saga = await new_saga(own, db)
    ids = await indexed(own, db, 2)
    login(web, "olga")
    token = csrf(web)
    moved = act(web, f"/timers/{saga}/step-timeout/reschedule", token, due_in="3h")
    assert moved.status_code == 303, moved.text
    assert "rescheduled timer step-timeout" in moved.headers["location"].replace("+", " ")
    replayed = act(web, "/dlq/replay", token, ids=ids, rate="20")
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/dlq/jobs/")
    missing_reason = act(web, f"/sagas/{saga}/compensate", token, reason=" ")
    assert missing_reason.status_code == 400 and "a reason is required" in missing_reason.text
    login(web, "ada")
    aborted = act(web, f"/sagas/{saga}/abort", csrf(web))
    assert aborted.status_code == 303, aborted.text

    state, rows = await state_and_history(db, saga)
    assert state == "aborted"
    assert [(r.actor, r.message_type) for r in rows[1:]] == [
        ("operator:olga", "operator:timer-reschedule"),
        ("operator:ada", "operator:abort"),
    ]
    assert all("ticket 42" in r.note for r in rows[1:])
    async with db.connect() as conn:
        job = (await conn.execute(select(replay_jobs))).one()
        trail = (await conn.execute(select(audit.c.actor, audit.c.action))).all()
    assert (job.created_by, job.total, job.runner, job.reason) == (
        "olga",
        2,
        "console",
        "ticket 42",
    )
    assert ("operator:olga", "dlq-replay-job") in trail
    not_found = web.get("/sagas/no-such-order")
    assert not_found.status_code == 404 and "no saga with id or business key" in not_found.text
    assert web.get("/sagas?stuck=soon").status_code == 400


async def test_four_eyes_needs_a_second_operator(own: Settings, db: AsyncEngine) -> None:
    saga = await new_saga(own, db)
    with client(own, approvals="second-operator") as web:
        login(web, "olga")
        asked = act(web, f"/sagas/{saga}/abort", csrf(web))
        assert asked.status_code == 303
        assert "second operator" in asked.headers["location"].replace("+", " ")
        assert (await state_and_history(db, saga))[0] == "awaiting_payment"
        async with db.connect() as conn:
            approval_id = await conn.scalar(
                select(approvals.c.id).where(approvals.c.status == "pending")
            )
        own_approval = web.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf(web)})
        assert own_approval.status_code == 403
        login(web, "vera")
        assert (
            web.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf(web)}).status_code
            == 403
        )
        login(web, "otto")
        approved = web.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf(web)})
        assert approved.status_code == 303, approved.text
    state, rows = await state_and_history(db, saga)
    assert state == "aborted"
    assert rows[-1].actor == "operator:olga" and "(approved by otto)" in rows[-1].note


async def test_read_only_mode_reads_but_never_acts(own: Settings, db: AsyncEngine) -> None:
    saga = await new_saga(own, db)
    with client(own, read_only=True) as web:
        login(web, "ada")
        page = web.get(f"/sagas/{saga}")
        assert page.status_code == 200 and "Read-only console" in page.text
        assert "/abort" not in page.text
        refused = act(web, f"/sagas/{saga}/abort", csrf(web))
        assert refused.status_code == 403 and "read-only" in refused.text
        assert web.get("/").headers["content-security-policy"].startswith("default-src 'self'")
    assert (await state_and_history(db, saga))[0] == "awaiting_payment"
    async with db.connect() as conn:
        assert (
            await conn.scalar(
                select(text("count(*)")).select_from(timers).where(timers.c.saga_id == saga)
            )
            == 1
        )


async def test_bad_requests_get_a_status_and_one_line(
    web: TestClient, own: Settings, db: AsyncEngine
) -> None:
    saga = await new_saga(own, db)
    login(web, "ada")
    token = csrf(web)
    answers = {
        "/sagas?after=garbage": (400, "bad page cursor"),
        "/sagas?older=3 days": (400, "is not a duration"),
        "/dlq/messages?saga=not-a-uuid": (400, "saga must be a saga id"),
        "/dlq/messages/987654": (404, "no longer parked"),
        "/dlq/jobs/987654": (404, "no replay job 987654"),
        f"/sagas/{saga}/bogus": (405, ""),
    }
    for path, (status, text_part) in answers.items():
        response = web.get(path)
        assert response.status_code == status, (path, response.text[:200])
        assert text_part in response.text, path
        assert "Traceback" not in response.text
    posts = {
        "/dlq/replay": ({"ids": "x", "rate": "fast"}, 400, "the rate is a number"),
        "/dlq/purge": ({}, 400, "choose messages, or a group"),
        "/dlq/preview": ({"verb": "delete"}, 400, "choose replay or purge"),
        f"/timers/{saga}/step-timeout/reschedule": ({"due_in": "soon"}, 400, "not a duration"),
        f"/timers/{saga}/step-timeout/explode": ({}, 404, "no such timer action"),
        "/sagas/no-such-order/retry": ({}, 404, "no saga with id or business key"),
        f"/sagas/{saga}/explode": ({}, 404, "no such action"),
        f"/sagas/{saga}/timer-cancel": ({}, 404, "no such action"),
        "/approvals/1/maybe": ({}, 404, "approve or reject"),
        f"/sagas/{saga}/retry": ({"reason": "x" * 501}, 400, "longer than 500 characters"),
    }
    for path, (data, status, text_part) in posts.items():
        response = web.post(path, data={"csrf": token, "reason": "ticket 42", **data})
        assert response.status_code == status, (path, response.text[:200])
        assert text_part in response.text, path
