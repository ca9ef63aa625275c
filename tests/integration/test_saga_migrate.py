"""`saga migrate` on real sagas: the survey, the checks, one transaction and history entry per
saga, and migrated sagas going on under the new version.

Order sagas are started under version 1 and left in every kind of rest (awaiting a payment, an
inventory reservation, a shipment, compensating); then version 2 (tests/order_v2.py: renamed
state, added step) is deployed and they are moved to it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import order as o
from orchestrator.engine.versioning import definition_hash
from orchestrator.migrate_sagas import SagaMigrator, drain_report
from orchestrator.migration_checks import MigrationRequest, plan_request
from orchestrator.store import sql as store_sql
from orchestrator.store.tables import history, instances
from orchestrator.workflows import WORKFLOWS
from sagaline.db import create_unpooled_engine
from sagaline.settings import Settings
from tests import order_v2
from tests.conftest import own_database
from tests.integration.support import FakeClock, reply
from tests.integration.test_admin import cli
from tests.integration.versions_support import (
    awaited,
    moves,
    pay,
    reserve,
    saga_row,
    ship,
    start,
    store_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

V2 = "tests.order_v2:WORKFLOWS"


@pytest.fixture
async def own(settings: Settings) -> AsyncIterator[Settings]:
    async with own_database(settings) as value:
        yield value


@pytest.fixture
async def db(own: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_unpooled_engine(own.sqlalchemy_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def running_v1_sagas(db: AsyncEngine, own: Settings, clock: FakeClock) -> dict[str, Any]:
    """Order sagas under version 1 at rest in each waiting state, plus one finished."""
    v1 = store_of(db, own, WORKFLOWS, clock)
    sagas: dict[str, Any] = {"paying": await start(v1)}
    sagas["reserving"] = [await start(v1), await start(v1)]
    for saga_id in sagas["reserving"]:
        await pay(v1, db, saga_id)
    sagas["shipping"] = await start(v1)
    await pay(v1, db, sagas["shipping"])
    await reserve(v1, db, sagas["shipping"])
    sagas["compensating"] = await start(v1)
    await pay(v1, db, sagas["compensating"])
    failed = o.InventoryReservationFailed(order_id=f"order-{sagas['compensating']}", reason="x")
    await v1.handle(reply(failed, sagas["compensating"], await awaited(db, sagas["compensating"])))
    sagas["done"] = await start(v1)
    for step in (pay, reserve, ship):
        await step(v1, db, sagas["done"])
    return sagas


def to_v2(*maps: str, where: tuple[str, ...] = ()) -> MigrationRequest:
    return plan_request(order_v2.WORKFLOWS, "order", 2, maps, where)


async def snapshot_of_rows(db: AsyncEngine) -> tuple[list[Any], int]:
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    instances.c.id, instances.c.state, instances.c.version,
                    instances.c.definition_version,
                ).order_by(instances.c.id)
            )
        ).all()  # fmt: skip
        entries = await conn.scalar(select(func.count()).select_from(history))
    return [tuple(r) for r in rows], int(entries or 0)


async def test_the_dry_run_counts_per_version_and_outcome_and_changes_nothing(
    own: Settings, db: AsyncEngine, clock: FakeClock
) -> None:
    await running_v1_sagas(db, own, clock)  # the finished one is not counted at all
    await start(store_of(db, own, order_v2.WORKFLOWS, clock))
    before = await snapshot_of_rows(db)

    report = await SagaMigrator(db).survey(to_v2())

    assert await snapshot_of_rows(db) == before
    body = report.as_dict()
    assert body["by_version"] == {"1": {"sagas": 5, "migrate": 5, "blocked": 0}}
    assert body["moves"] == [
        {"from_version": 1, "from_state": "awaiting_inventory", "to_state": "reserving_stock",
         "sagas": 2},
        {"from_version": 1, "from_state": "awaiting_payment", "to_state": "awaiting_payment",
         "sagas": 1},
        {"from_version": 1, "from_state": "awaiting_shipment", "to_state": "awaiting_shipment",
         "sagas": 1},
        {"from_version": 1, "from_state": "compensating", "to_state": "compensating",
         "sagas": 1},
    ]  # fmt: skip
    assert (body["already_at_target"], body["blocked"], body["migrated"]) == (1, [], 0)


async def test_migrated_sagas_get_a_history_entry_and_go_on_under_version_2(
    own: Settings, db: AsyncEngine, clock: FakeClock
) -> None:
    sagas = await running_v1_sagas(db, own, clock)
    reserving = sagas["reserving"][0]
    before = await saga_row(db, reserving)

    report = await SagaMigrator(db, clock=clock, batch_size=2).migrate(
        to_v2(), "olga", "order v2 deployed"
    )

    assert (report.migrated, report.blocked) == (5, 0)
    row = await saga_row(db, reserving)
    assert (row.state, row.definition_version, row.version) == (
        "reserving_stock",
        2,
        before.version + 1,
    )
    assert (row.runtime, row.data) == (before.runtime, before.data)  # awaits the same command
    async with db.connect() as conn:
        entry = (
            await conn.execute(
                select(history).where(history.c.saga_id == reserving).order_by(history.c.id.desc())
            )
        ).first()
    assert entry is not None
    assert (entry.message_type, entry.outcome, entry.actor, entry.version) == (
        "operator:migrate",
        "migrated",
        "operator:olga",
        before.version + 1,
    )
    assert entry.note == "migrate by olga: order v2 deployed (order v1 → v2)"
    assert (await saga_row(db, sagas["done"])).definition_version == 1  # finished: untouched

    # The reply to the command it was waiting for now takes version 2's path (packing).
    deployed = store_of(db, own, order_v2.WORKFLOWS, clock)
    await reserve(deployed, db, reserving)
    assert (await saga_row(db, reserving)).state == "packing"
    clock.advance(order_v2.PACKING_TIME)
    await deployed.fire_due_timers(100)
    await ship(deployed, db, reserving)
    assert (await saga_row(db, reserving)).state == "completed"
    assert (await moves(db, reserving))[-4:] == [
        "awaiting_inventory->reserving_stock",
        "reserving_stock->packing",
        "packing->awaiting_shipment",
        "awaiting_shipment->completed",
    ]
    # The compensating saga's refund confirmation is still taken, under version 2.
    refunded = o.PaymentRefunded(order_id=f"order-{sagas['compensating']}", amount_cents=1000)
    compensating = sagas["compensating"]
    await deployed.handle(reply(refunded, compensating, await awaited(db, compensating)))
    row = await saga_row(db, compensating)
    assert (row.state, row.definition_version) == ("failed", 2)


async def test_sagas_that_would_lose_their_meaning_are_blocked_and_left_alone(
    own: Settings, db: AsyncEngine, clock: FakeClock
) -> None:
    sagas = await running_v1_sagas(db, own, clock)
    before = await snapshot_of_rows(db)
    # Mapped into the new packing step while their reservation is still in flight.
    request = to_v2("awaiting_inventory=packing", where=("state=awaiting_inventory",))

    report = await SagaMigrator(db).migrate(request, "olga", "try packing")

    assert (report.migrated, report.blocked) == (0, 2)
    assert dict(report.reasons) == {
        "it awaits ReserveInventory, but packing in v2 does not act on InventoryReserved, "
        "InventoryReservationFailed": 2,
        "its timer step-timeout would change nothing in packing under v2 (cancel it first: "
        "sagaline timers cancel)": 2,
    }
    assert sorted(report.examples[next(iter(report.reasons))]) == sorted(
        str(s) for s in sagas["reserving"]
    )
    assert await snapshot_of_rows(db) == before


async def test_a_step_racing_the_migration_is_decided_again_under_version_2(
    own: Settings, db: AsyncEngine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sagas = await running_v1_sagas(db, own, clock)
    saga_id = sagas["reserving"][0]
    deployed = store_of(db, own, order_v2.WORKFLOWS, clock)
    original = store_sql.read
    migrated = False

    async def load_then_migrate(conn, incomings, start_keys):  # type: ignore[no-untyped-def]
        nonlocal migrated
        loaded = await original(conn, incomings, start_keys)
        if not migrated:  # the step has read version 1; the migration commits before it writes
            migrated = True
            request = to_v2(where=(f"key=order-{saga_id}",))
            await SagaMigrator(db).migrate(request, "olga", "racing")
        return loaded

    monkeypatch.setattr(store_sql, "read", load_then_migrate)
    conflicts = 0

    def count() -> None:
        nonlocal conflicts
        conflicts += 1

    deployed.on_conflict = count
    await reserve(deployed, db, saga_id)

    assert conflicts == 1
    row = await saga_row(db, saga_id)
    # Version 1 would have sent the shipment; version 2 packs first.
    assert (row.state, row.definition_version) == ("packing", 2)


async def test_where_key_prefix_and_limit_pick_a_canary(
    own: Settings, db: AsyncEngine, clock: FakeClock
) -> None:
    sagas = await running_v1_sagas(db, own, clock)
    migrator = SagaMigrator(db, batch_size=1)

    one = await migrator.migrate(to_v2(where=("key=order-*",)), "olga", "canary", limit=1)
    assert one.migrated == 1
    rest = await migrator.survey(to_v2(where=("version=1", "state=awaiting_inventory")))
    assert rest.as_dict()["by_version"]["1"]["sagas"] in (1, 2)
    exact = f"order-{sagas['paying']}"
    only = await migrator.survey(to_v2(where=(f"key={exact}",)))
    assert sum(c["sagas"] for c in only.by_version.values()) + only.already == 1


async def test_the_drain_report_counts_running_sagas_per_version(
    own: Settings, db: AsyncEngine, clock: FakeClock
) -> None:
    await running_v1_sagas(db, own, clock)
    await start(store_of(db, own, order_v2.WORKFLOWS, clock))

    uses = {(u.workflow, u.version): u for u in await drain_report(db, order_v2.WORKFLOWS)}
    assert (uses[("order", 1)].running, uses[("order", 2)].running) == (5, 1)
    assert uses[("order", 2)].newest and not uses[("order", 1)].newest
    assert uses[("enrollment", 1)].running == 0
    await SagaMigrator(db).migrate(to_v2(), "olga", "drain v1")
    drained = {(u.workflow, u.version): u for u in await drain_report(db, order_v2.WORKFLOWS)}
    assert drained[("order", 1)].running == 0

    # A build that no longer loads version 1, with a version 1 saga left: named, without hash.
    await start(store_of(db, own, WORKFLOWS, clock))
    without_v1 = {(u.workflow, u.version): u for u in await drain_report(db, _only_v2())}
    assert (without_v1[("order", 1)].running, without_v1[("order", 1)].hash) == (1, None)


def _only_v2() -> Any:
    from orchestrator.engine.registry import Workflows

    return Workflows.of(order_v2.machine)


async def cli_json(own: Settings, *args: str) -> Any:
    result = await cli(own, *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


async def test_cli_dry_run_then_migrate_and_the_version_in_show_and_list(
    own: Settings, db: AsyncEngine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGALINE_WORKFLOWS", V2)
    sagas = await running_v1_sagas(db, own, clock)
    args = ("saga", "migrate", "--workflow", "order", "--to", "2", "--json")

    dry = await cli_json(own, *args, "--dry-run")
    assert dry["dry_run"] is True and dry["result"] is None
    assert dry["survey"]["by_version"] == {"1": {"sagas": 5, "migrate": 5, "blocked": 0}}
    assert (await saga_row(db, sagas["paying"])).definition_version == 1

    done = await cli_json(own, *args, "--reason", "v2 is live", "--by", "olga", "--yes")
    assert (done["result"]["migrated"], done["result"]["blocked"]) == (5, [])
    shown = await cli_json(own, "saga", "show", str(sagas["paying"]), "--json")
    assert (shown["definition_version"], shown["definition_hash"]) == (
        2,
        definition_hash(order_v2.machine),
    )
    assert shown["history"][-1]["note"] == "migrate by olga: v2 is live (order v1 → v2)"
    human = await cli(own, "saga", "show", str(sagas["paying"]))
    assert f"order v2 ({definition_hash(order_v2.machine)})" in human.stdout
    listed = await cli_json(own, "saga", "list", "--workflow", "order", "--json")
    assert {s["definition_version"] for s in listed["sagas"]} == {1, 2}  # the finished one: v1
    report = await cli_json(own, "saga", "versions", "--workflow", "order", "--json")
    assert [(v["version"], v["running"]) for v in report["versions"]] == [(1, 0), (2, 5)]
    text = await cli(own, "saga", "versions")
    assert "drained: can be retired" in text.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--workflow", "nope", "--to", "2"), "unknown workflow 'nope'"),
        (("--workflow", "order", "--to", "7"), "order has no version 7 loaded (v1, v2)"),
        (("--workflow", "order", "--to", "2", "--map", "missing=packing"),
         "'missing' is no state of any loaded version"),
        (("--workflow", "order", "--to", "2", "--map", "awaiting_inventory=awaiting_inventory"),
         "'awaiting_inventory' is no state of v2"),
        (("--workflow", "order", "--to", "2", "--map", "packing"), "expected OLD=NEW"),
        (("--workflow", "order", "--to", "2", "--where", "colour=red"), "expected state=NAME"),
        (("--workflow", "order", "--to", "2", "--where", "state=nowhere"),
         "--where state=nowhere: no state of any loaded version"),
        (("--workflow", "order", "--to", "2", "--where", "version=x"), "whole numbers"),
        (("--workflow", "order", "--to", "2"), "a reason is required"),
        (("--workflow", "order", "--to", "2", "--reason", "r"), "pass --yes"),
    ],
)  # fmt: skip
async def test_bad_input_is_one_line_and_exit_2_before_anything_changes(
    own: Settings, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...], message: str
) -> None:
    from tests.unit.test_cli import assert_one_line_error

    monkeypatch.setenv("SAGALINE_WORKFLOWS", V2)
    result = await cli(own, "saga", "migrate", *extra)
    assert_one_line_error(result, code=2, contains=message)
