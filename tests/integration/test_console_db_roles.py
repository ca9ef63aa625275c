"""The console's database roles (deploy/postgres/roles.sql, granted by migration 0006): the
read-only console works logged in as `sagaline_console_viewer`, which cannot change a saga;
`sagaline_console` can act on sagas but cannot read a worker's tables."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from sagaline_tools.console.accounts import Accounts
from sagaline_tools.console.app import build_app
from sagaline_tools.console.settings import ConsoleSettings
from tests.conftest import own_database
from tests.integration.test_console_rights import PASSWORD, login, new_saga

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROLES = ("sagaline_console", "sagaline_console_viewer")


def as_role(settings: Settings, role: str) -> Settings:
    url = make_url(settings.database_url).set(username=role, password=None)
    return settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})


@pytest.fixture(scope="module")
async def own(settings: Settings) -> AsyncIterator[Settings]:
    """A database migrated after the console's roles exist (created here as roles.sql does,
    when missing: roles are shared by every database of the server)."""
    admin = make_url(settings.database_url).set(drivername="postgresql")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        if not await conn.fetchval(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ):
            pytest.skip("needs a database user that may create roles")
        for role in ROLES:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {role} LOGIN")
    finally:
        await conn.close()
    async with own_database(settings) as value:
        database = make_url(value.database_url).database
        conn = await asyncpg.connect(
            make_url(value.database_url).set(drivername="postgresql").render_as_string(False)
        )
        try:  # as deploy/postgres/roles.sql leaves the database
            await conn.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
            for role in ROLES:
                await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        finally:
            await conn.close()
        engine = create_unpooled_engine(value.sqlalchemy_url)
        await Accounts(engine).add("ada", "admin", PASSWORD)
        await engine.dispose()
        yield value


async def test_the_read_only_console_runs_as_the_viewer_role(own: Settings) -> None:
    owner_engine = create_unpooled_engine(own.sqlalchemy_url)
    saga = await new_saga(own, owner_engine)
    await owner_engine.dispose()
    viewer = as_role(own, "sagaline_console_viewer")
    app = build_app(viewer, ConsoleSettings(read_only=True), background=False)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as web:
        assert login(web, "ada").status_code == 303  # sessions are written as the viewer
        for path in ("/", f"/sagas/{saga}", "/sagas?active=1", "/dlq", "/timers", "/audit"):
            page = web.get(path)
            assert page.status_code == 200, (path, page.text[:300])
        token = re.search(r'name="csrf" value="([^"]+)"', web.get("/").text)
        assert token is not None
        refused = web.post(f"/sagas/{saga}/abort", data={"csrf": token[1], "reason": "x"})
        assert refused.status_code == 403
    conn = await asyncpg.connect(
        make_url(viewer.database_url).render_as_string(hide_password=False)
    )
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE saga.instances SET state = 'aborted'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM saga.timers")
    finally:
        await conn.close()


async def test_the_console_role_acts_on_sagas_but_not_on_worker_tables(own: Settings) -> None:
    console = as_role(own, "sagaline_console")
    conn = await asyncpg.connect(
        make_url(console.database_url).render_as_string(hide_password=False)
    )
    try:
        # Its operator actions are saga steps, whose write function lives in the session's
        # temporary schema: migrating granted TEMPORARY, which roles.sql revokes from PUBLIC.
        await conn.execute("CREATE FUNCTION pg_temp.probe() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        await conn.execute("UPDATE saga.instances SET version = version WHERE false")
        await conn.execute("INSERT INTO console.audit (at, actor, action, target, reason, details)"
                           " VALUES (now(), 'operator:t', 't', 't', 't', '{}')")  # fmt: skip
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM payments.ledger LIMIT 1")
    finally:
        await conn.close()


async def test_a_read_write_console_without_temporary_says_so_before_serving(
    own: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every action of a read-write console is a saga step, whose write function needs
    TEMPORARY: a role without it gets one line naming the grant and exit 3, not a console whose
    buttons all fail. The read-only console needs no such right and starts."""
    from typer.testing import CliRunner

    from sagaline_tools.cli import app

    role = f"sl_console_{uuid.uuid4().hex[:8]}"
    database = make_url(own.database_url).database
    owner = await asyncpg.connect(
        make_url(own.database_url).set(drivername="postgresql").render_as_string(False)
    )
    served: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: served.append(args))
    try:
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        await owner.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        env = {"DATABASE_URL": as_role(own, role).database_url, "SAGALINE_NAMESPACE": own.namespace}
        refused = await asyncio.to_thread(
            CliRunner().invoke, app, ["console", "--read-write", "--port", "0"], env=env
        )
        assert refused.exit_code == 3, refused.output
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert f"role {role} may not create temporary objects in database {database}" in (
            refused.stderr
        )
        assert f"GRANT TEMPORARY ON DATABASE {database} TO {role}" in refused.stderr
        assert "--read-only" in refused.stderr and served == []

        read_only = await asyncio.to_thread(
            CliRunner().invoke, app, ["console", "--read-only", "--port", "0"], env=env
        )
        assert read_only.exit_code == 0, read_only.output
        assert len(served) == 1
    finally:
        await owner.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {role}')
        await owner.execute(f"DROP ROLE IF EXISTS {role}")
        await owner.close()
