"""`saga migrate` from the console: the versions page (drain report), the dry-run preview, the
migration by an admin, the refusal for an operator and for bad input, and the saga page showing
the version a saga runs under with that version's diagram."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import unquote_plus

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from orchestrator.engine.versioning import definition_hash
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from sagaline_tools.console.accounts import Accounts
from sagaline_tools.console.app import build_app
from sagaline_tools.console.settings import ConsoleSettings
from tests import order_v2
from tests.conftest import own_database
from tests.integration.console_support import declare, private_namespace
from tests.integration.support import FakeClock
from tests.integration.test_console_rights import PASSWORD, act, csrf, login
from tests.integration.versions_support import pay, saga_row, start, store_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
async def own(settings: Settings) -> AsyncIterator[Settings]:
    async with (
        own_database(settings, workflows="tests.order_v2:WORKFLOWS") as db_settings,
        private_namespace(db_settings) as value,
    ):
        await declare(value)
        engine = create_unpooled_engine(value.sqlalchemy_url)
        await Accounts(engine).add("ada", "admin", PASSWORD)
        await Accounts(engine).add("olga", "operator", PASSWORD)
        await Accounts(engine).add("otto", "operator", PASSWORD)
        await engine.dispose()
        yield value


@pytest.fixture
async def db(own: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(own.sqlalchemy_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def web(own: Settings) -> Iterator[TestClient]:
    app = build_app(own, ConsoleSettings(), background=False)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as value:
        yield value


async def waiting_v1_sagas(db: AsyncEngine, own: Settings, count: int) -> list[Any]:
    clock = FakeClock()
    v1 = store_of(db, own, WORKFLOWS, clock)
    sagas = [await start(v1) for _ in range(count)]
    for saga_id in sagas:
        await pay(v1, db, saga_id)
    return sagas


MIGRATION = {"workflow": "order", "to": "2", "maps": "", "where": "state=awaiting_inventory"}


async def test_an_admin_previews_then_migrates_and_the_saga_page_shows_the_version(
    web: TestClient, db: AsyncEngine, own: Settings
) -> None:
    sagas = await waiting_v1_sagas(db, own, 3)
    login(web, "ada")
    token = csrf(web)

    versions = web.get("/versions")
    assert versions.status_code == 200
    assert "<td>order</td><td>v1</td>" in versions.text and "still running" in versions.text
    before = web.get(f"/sagas/{sagas[0]}")
    v1_hash = definition_hash(WORKFLOWS["order"])
    assert f"order v1 ({v1_hash})" in before.text and "awaiting_inventory" in before.text

    preview = act(web, "/versions/preview", token, **MIGRATION)
    assert preview.status_code == 200, preview.text
    assert "<td>v1</td><td>3</td><td>3</td><td>0</td>" in preview.text
    assert "<td>awaiting_inventory</td><td>reserving_stock</td><td>3</td>" in preview.text
    assert (await saga_row(db, sagas[0])).definition_version == 1  # a dry run

    done = act(web, "/versions/migrate", token, **MIGRATION, reason="v2 deployed")
    assert done.status_code == 303
    assert "migrated 3 saga(s) to order v2" in unquote_plus(done.headers["location"])
    row = await saga_row(db, sagas[0])
    assert (row.state, row.definition_version) == ("reserving_stock", 2)
    page = web.get(f"/sagas/{sagas[0]}")
    assert f"order v2 ({definition_hash(order_v2.machine)})" in page.text
    assert "packing" in page.text  # version 2's diagram
    assert "migrate by ada: v2 deployed (order v1 → v2)" in page.text


async def test_an_operator_may_preview_but_not_migrate(
    web: TestClient, db: AsyncEngine, own: Settings
) -> None:
    sagas = await waiting_v1_sagas(db, own, 1)
    login(web, "olga")
    token = csrf(web)

    preview = act(web, "/versions/preview", token, **MIGRATION)
    assert preview.status_code == 200 and "migrate needs an admin" in preview.text
    assert 'id="confirm-migration"' not in preview.text
    refused = act(web, "/versions/migrate", token, **MIGRATION)
    assert refused.status_code == 403 and "migrate needs an admin" in refused.text
    assert (await saga_row(db, sagas[0])).definition_version == 1


async def test_with_four_eyes_a_second_operator_approves_the_migration(
    db: AsyncEngine, own: Settings
) -> None:
    sagas = await waiting_v1_sagas(db, own, 2)
    app = build_app(own, ConsoleSettings(approvals="second-operator"), background=False)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as web:
        login(web, "olga")
        asked = act(web, "/versions/migrate", csrf(web), **MIGRATION, reason="v2 is live")
        assert "asked as approval" in unquote_plus(asked.headers["location"])
        assert (await saga_row(db, sagas[0])).definition_version == 1
        approval = re.search(r'action="/approvals/(\d+)/approve"', web.get("/approvals").text)
        assert approval is None  # not to the one who asked
        login(web, "otto")
        pending = re.search(r'action="/approvals/(\d+)/approve"', web.get("/approvals").text)
        assert pending is not None
        done = act(web, f"/approvals/{pending[1]}/approve", csrf(web))
        assert "migrated 2 saga(s) to order v2" in unquote_plus(done.headers["location"])
    row = await saga_row(db, sagas[0])
    assert (row.state, row.definition_version) == ("reserving_stock", 2)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"to": "9"}, "order has no version 9 loaded (v1, v2)"),
        ({"workflow": "nope"}, "unknown workflow &#39;nope&#39;"),
        ({"maps": "awaiting_inventory=nowhere"}, "is no state of v2"),
        ({"where": "colour=red"}, "expected state=NAME"),
        ({"to": "two"}, "whole numbers"),
    ],
)
async def test_bad_input_is_a_400_with_one_line(
    web: TestClient, own: Settings, form: dict[str, str], message: str
) -> None:
    login(web, "ada")
    token = csrf(web)
    for path in ("/versions/preview", "/versions/migrate"):
        answer = act(web, path, token, **{**MIGRATION, **form})
        assert answer.status_code == 400 and message in answer.text, (path, answer.text)
