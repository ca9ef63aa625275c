"""Definition versions: hashes, the checked-in snapshots, and the stranded-state check.

The first test is the guard a team meets: change a workflow's states, edges, timers or
compensations without giving the change a new version (and its snapshot), and it fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.engine import versioning
from orchestrator.engine.registry import Workflows
from orchestrator.workflows import WORKFLOWS, order, snapshots
from orchestrator.workflows.loading import (
    WorkflowsNotFound,
    load_workflows,
    snapshot_directory,
)
from sagaline_tools.cli import app
from tests import order_v2
from tests.unit.test_cli import assert_one_line_error

CHECKED_IN = snapshot_directory("orchestrator.workflows:WORKFLOWS")


def test_every_loaded_workflow_version_matches_its_checked_in_snapshot() -> None:
    assert Path(order.__file__).parent / "versions" == CHECKED_IN
    assert snapshots.check(WORKFLOWS.machines(), CHECKED_IN) == []
    assert sorted(snapshots.read(CHECKED_IN)) == [("documents", 1), ("enrollment", 1), ("order", 1)]


def test_a_machine_changed_without_a_new_version_fails_the_check(tmp_path: Path) -> None:
    snapshots.write([order.machine], tmp_path)
    changed = order_v2.build()
    changed.version = 1  # version 2's changes, passed off as version 1

    (problem,) = snapshots.check([changed], tmp_path)

    assert problem.startswith("order v1 changed since its snapshot")
    assert "make the change version 2" in problem
    with pytest.raises(snapshots.SnapshotError, match="order v1 changed since its snapshot"):
        snapshots.write([changed], tmp_path)
    assert json.loads((tmp_path / "order" / "v1.json").read_text())["hash"] == (
        versioning.definition_hash(order.machine)
    )


def test_a_new_version_without_a_snapshot_fails_the_check(tmp_path: Path) -> None:
    snapshots.write([order.machine], tmp_path)

    assert snapshots.check([order.machine, order_v2.machine], tmp_path) == [
        "order v2 has no snapshot: run `sagaline workflows snapshot` and check the file in"
    ]


def test_a_new_version_that_maps_its_renamed_state_is_written_and_passes(tmp_path: Path) -> None:
    written = snapshots.write([order.machine, order_v2.machine], tmp_path)

    assert written == [tmp_path / "order" / "v1.json", tmp_path / "order" / "v2.json"]
    assert snapshots.check([order.machine, order_v2.machine], tmp_path) == []
    assert snapshots.write([order.machine, order_v2.machine], tmp_path) == []  # stable
    document = json.loads((tmp_path / "order" / "v2.json").read_text())
    assert document["continues_from_previous"] == {"awaiting_inventory": "reserving_stock"}
    assert document["definition"]["timers"]["packing"] == ["packing", "step-timeout"]


def test_a_new_version_that_strands_a_state_is_refused(tmp_path: Path) -> None:
    snapshots.write([order.machine], tmp_path)
    unmapped = order_v2.build(rename=False)

    with pytest.raises(snapshots.SnapshotError) as refused:
        snapshots.write([order.machine, unmapped], tmp_path)

    assert refused.value.problems == [
        "order v2 strands state awaiting_inventory of v1: keep the state, or say where its "
        "sagas continue with machine.continues({'awaiting_inventory': ...})"
    ]
    assert not (tmp_path / "order" / "v2.json").exists()
    # The same check on files written by hand (or from an older build): it fails there too.
    (tmp_path / "order" / "v2.json").write_text(versioning.render(versioning.snapshot(unmapped)))
    assert snapshots.check([order.machine, unmapped], tmp_path) == refused.value.problems


def test_mappings_must_name_real_states_and_keep_compensating_apart() -> None:
    v1 = versioning.snapshot(order.machine)
    v2 = dict(versioning.snapshot(order_v2.machine))
    v2["continues_from_previous"] = {
        "awaiting_inventory": "reserving_stock",
        "nowhere": "packing",
        "awaiting_payment": "gone",
        "compensating": "packing",
    }

    assert versioning.stranded(v1, v2) == [
        "order v2 continues awaiting_payment in gone, not one of its states",
        "order v2 continues from nowhere, not a state of v1",
        "order v2 continues compensating of v1 in packing: only the compensating state "
        "continues in the compensating state",
    ]


def test_versions_count_without_gaps_and_the_newest_snapshot_is_loaded(tmp_path: Path) -> None:
    snapshots.write([order.machine, order_v2.machine], tmp_path)
    (tmp_path / "order" / "v2.json").rename(tmp_path / "order" / "v3.json")
    text = (tmp_path / "order" / "v3.json").read_text().replace('"version": 2', '"version": 3')
    (tmp_path / "order" / "v3.json").write_text(text)

    assert snapshots.check([order.machine], tmp_path) == [
        "order: snapshot v3 exists but the newest version loaded is v1",
        "order: snapshots v1, v3 do not count 1, 2, ... without gaps",
    ]


def test_unreadable_snapshot_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "order").mkdir()
    (tmp_path / "order" / "v1.json").write_text("{not json")
    (tmp_path / "order" / "latest.json").write_text("{}")

    with pytest.raises(snapshots.SnapshotError) as error:
        snapshots.read(tmp_path)

    assert error.value.problems == [
        "order/latest.json: snapshot files are named v<N>.json",
        "order/v1.json: not readable JSON (JSONDecodeError)",
    ]


def test_the_hash_covers_timers_and_compensations_but_not_declaration_order() -> None:
    assert versioning.definition_hash(order_v2.build()) == versioning.definition_hash(
        order_v2.machine
    )
    with_timer = order_v2.build()
    with_timer.ignores.pop(("packing", order.STEP_TIMEOUT.trigger))
    with_timer.on(order_v2.S.PACKING, order.STEP_TIMEOUT, to=order_v2.S.COMPENSATING)
    other_compensation = order_v2.build()
    other_compensation.compensations["RefundPayment"] = "PaymentFailed"
    hashes = {
        versioning.definition_hash(m)
        for m in (order_v2.machine, with_timer, other_compensation, order.machine)
    }
    assert len(hashes) == 4
    assert versioning.label(order.machine) == (
        f"order v1 ({versioning.definition_hash(order.machine)})"
    )


def test_the_configured_workflows_load_by_module_and_attribute() -> None:
    assert load_workflows("tests.order_v2:WORKFLOWS") is order_v2.WORKFLOWS
    assert snapshot_directory("tests.order_v2:WORKFLOWS") == Path(order_v2.__file__).parent / (
        "versions"
    )
    for spec, message in [
        ("tests.nothing_here:WORKFLOWS", "cannot import tests.nothing_here"),
        ("tests.order_v2:machine", "machine in tests.order_v2 is not a Workflows value"),
        ("tests.order_v2", "is not module:attribute"),
    ]:
        with pytest.raises(WorkflowsNotFound, match=message):
            load_workflows(spec)


def test_two_workflows_may_not_consume_one_event() -> None:
    renamed = order_v2.build()
    renamed.name = "other"
    with pytest.raises(ValueError, match="consumed by two workflows"):
        Workflows.of(order.machine, renamed)


def test_cli_snapshot_check_and_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["workflows", "snapshot", "--check"])
    assert ok.exit_code == 0, ok.output

    monkeypatch.setenv("SAGALINE_WORKFLOWS", "tests.order_v2:WORKFLOWS")
    missing = runner.invoke(app, ["workflows", "snapshot", "--check", "--dir", str(tmp_path)])
    assert_one_line_error(missing, code=1, contains="order v2 has no snapshot")
    written = runner.invoke(app, ["workflows", "snapshot", "--dir", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert (tmp_path / "order" / "v2.json").exists()
    listed = runner.invoke(app, ["workflows", "list", "--json"])
    assert json.loads(listed.stdout)["versions"][-2:] == [
        {
            "workflow": "order",
            "version": 1,
            "hash": versioning.definition_hash(order.machine),
            "newest": False,
        },
        {
            "workflow": "order",
            "version": 2,
            "hash": versioning.definition_hash(order_v2.machine),
            "newest": True,
        },
    ]

    monkeypatch.setenv("SAGALINE_WORKFLOWS", "tests.nothing_here:WORKFLOWS")
    broken = runner.invoke(app, ["workflows", "list"])
    assert_one_line_error(broken, code=2, contains="cannot import tests.nothing_here")


def test_cli_diagram_of_a_version(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("SAGALINE_WORKFLOWS", "tests.order_v2:WORKFLOWS")
    newest = runner.invoke(app, ["diagram", "order"])
    first = runner.invoke(app, ["diagram", "order", "--version", "1", "--json"])

    assert "packing" in newest.stdout
    body = json.loads(first.stdout)
    assert body["version"] == 1 and "packing" not in body["diagram"]
    assert "awaiting_inventory" in body["diagram"]
    missing = runner.invoke(app, ["diagram", "order", "--version", "9"])
    assert_one_line_error(missing, code=2, contains="order has no version 9 loaded (v1, v2)")
