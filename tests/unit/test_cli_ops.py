"""`sagaline dlq|saga|diagram`: arguments, durations, confirmation, JSON shapes (no services).

Commands that would reach RabbitMQ or PostgreSQL get fakes of ParkingQueues and SagaAdmin, so
these tests pin the command line itself; tests/integration and tests/e2e run them for real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.admin import (
    ActionResult,
    HistoryEntry,
    OutstandingCommand,
    PendingTimer,
    SagaNotFound,
    SagaSummary,
    SagaView,
)
from sagaline.messaging.parking import DlqError, ParkedMessage, QueueSummary, Selection
from sagaline_tools.cli import app
from sagaline_tools.cli import dlq as dlq_cli
from sagaline_tools.cli import saga as saga_cli
from sagaline_tools.cli.output import CliError
from tests.unit.test_cli import DEAD_AMQP, DEAD_DB, assert_one_line_error

SAGA_ID = uuid.UUID("6f1c9c52-5d0e-4a55-9d43-2f1f7b0b3a10")
COMMAND_ID = uuid.UUID("0d8a3c44-1f1e-5c1b-8e55-5f0f5f0a8b21")
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, **kwargs: Any) -> Any:
    env = {"AMQP_URL": DEAD_AMQP, "DATABASE_URL": DEAD_DB, "USER": "ops-anna"}
    return runner.invoke(app, list(args), env=env, **kwargs)


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert saga_cli.parse_duration(text) == timedelta(seconds=seconds)


def test_durations_ignore_case_and_spaces() -> None:
    assert saga_cli.parse_duration(" 2H ") == timedelta(hours=2)


@pytest.mark.parametrize("text", ["", "2", "2x", "h", "-5m", "1.5h", "0s", "2h junk", "m5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        saga_cli.parse_duration(text)


def test_bad_duration_is_one_line_before_any_connection(runner: CliRunner) -> None:
    result = invoke(runner, "saga", "list", "--stuck-for", "2x")
    assert_one_line_error(result, code=2, contains="not a duration")


# --- argument errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (["saga", "list", "--workflow", "nope"], "unknown workflow 'nope' (known: "),
        (["saga", "list", "--workflow", "order", "--state", "nope"], "unknown state 'nope'"),
        (["saga", "list", "--limit", "0"], "--limit"),
        (["saga", "abort", "some-order"], "Missing option '--reason'"),
        (["saga", "abort", "some-order", "--reason", "  "], "a reason is required"),
        (["saga", "abort", "x", "--reason", "r", "--by", "two words"], "without spaces"),
        (["saga", "abort", "x", "--reason", "r" * 501], "longer than 500"),
        (["saga", "show"], "Missing argument"),
        (["dlq", "replay", "payments"], "exactly one of --id, --reason or --all"),
        (["dlq", "replay", "payments", "--all", "--reason", "x"], "exactly one of"),
        (["dlq", "purge", "payments", "--id", "a", "--all", "--yes"], "exactly one of"),
        (["dlq", "show", "payments", "--limit", "0"], "--limit"),
        (["diagram", "nope"], "unknown workflow 'nope' (known: "),
        (["diagram", "order", "--format", "svg"], "--format"),
    ],
)
def test_argument_errors_are_one_line_with_exit_2(
    runner: CliRunner, args: list[str], contains: str
) -> None:
    assert_one_line_error(invoke(runner, *args), code=2, contains=contains)


def test_no_user_and_no_by_is_refused(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "")
    result = runner.invoke(
        app,
        ["saga", "abort", "x", "--reason", "r"],
        env={"USER": "", "LOGNAME": "", "DATABASE_URL": DEAD_DB},
    )
    assert_one_line_error(result, code=2, contains="pass --by NAME")


@pytest.mark.parametrize(
    "args",
    [["dlq", "list"], ["dlq", "show", "payments"], ["dlq", "replay", "payments", "--all"]],
)
def test_unreachable_broker_is_exit_3(runner: CliRunner, args: list[str]) -> None:
    result = invoke(runner, *args)
    assert_one_line_error(result, code=3, contains="cannot reach RabbitMQ")
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [["saga", "show", "x"], ["saga", "list"], ["saga", "retry", "x", "--reason", "r"]],
)
def test_unreachable_database_is_exit_3(runner: CliRunner, args: list[str]) -> None:
    result = invoke(runner, *args)
    assert_one_line_error(result, code=3, contains="PostgreSQL")
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "replay"],
        ["dlq", "purge"],
        ["saga"],
        ["saga", "list"],
        ["saga", "show"],
        ["saga", "retry"],
        ["saga", "skip"],
        ["saga", "compensate"],
        ["saga", "abort"],
        ["diagram"],
    ],
)
def test_help(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


# --- purge confirmation --------------------------------------------------------------------------


def test_purge_without_yes_and_without_a_terminal_is_refused(runner: CliRunner) -> None:
    # Refused before connecting anywhere: the dead broker would otherwise answer exit 3.
    result = invoke(runner, "dlq", "purge", "payments", "--all")
    assert_one_line_error(result, code=2, contains="pass --yes")


def test_purge_asks_and_a_no_deletes_nothing(
    runner: CliRunner, parking: FakeParking, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dlq_cli, "stdin_is_terminal", lambda: True)
    result = invoke(runner, "dlq", "purge", "payments", "--all", input="n\n")
    assert "Delete 2 parked message(s) from t.payments.parking for good?" in result.stdout
    assert_one_line_error(result, code=1, contains="purge cancelled; nothing was deleted")
    assert parking.purged == []


def test_purge_asks_and_a_yes_deletes(
    runner: CliRunner, parking: FakeParking, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dlq_cli, "stdin_is_terminal", lambda: True)
    result = invoke(runner, "dlq", "purge", "payments", "--reason", "malformed-json", input="y\n")
    assert result.exit_code == 0, result.stderr
    assert parking.purged == [Selection(reason="malformed-json")]
    assert "purged 1 message(s) from t.payments.parking" in result.stdout


def test_purge_with_yes_does_not_ask(runner: CliRunner, parking: FakeParking) -> None:
    result = invoke(runner, "dlq", "purge", "payments", "--id", "m-1", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["count"], body["not_found"]) == (1, [])
    assert parking.purged == [Selection(ids=frozenset({"m-1"}))]


# --- JSON shapes ---------------------------------------------------------------------------------


def parked(position: int, message_id: str, reason: str) -> ParkedMessage:
    return ParkedMessage(
        position=position,
        message_id=message_id,
        correlation_id=str(SAGA_ID),
        message_type="ProcessPayment",
        reason=reason,
        original_queue="t.payments",
        attempts=3,
        replays=0,
        first_failed_at="2026-03-01T12:00:00+00:00",
        last_failed_at="2026-03-01T12:00:01+00:00",
        error="InjectedFault: injected failure for ProcessPayment",
        size=300,
    )


class FakeParking:
    """ParkingQueues without a broker: two parked messages in the payments queue."""

    def __init__(self) -> None:
        self.messages = [parked(0, "m-1", "retries-exhausted"), parked(1, "m-2", "malformed-json")]
        self.purged: list[Selection] = []

    def resolve(self, name: str) -> str:
        if name not in ("payments", "t.payments.parking"):
            raise DlqError(f"unknown parking queue {name!r} (consumers: payments)")
        return "t.payments.parking"

    async def summaries(self) -> list[QueueSummary]:
        return [
            QueueSummary("t.orchestrator.parking", 0, {}, 0),
            QueueSummary("t.payments.parking", 2, {"malformed-json": 1, "retries-exhausted": 1}, 2),
        ]

    async def depth(self, queue: str) -> int:
        return len(self.messages)

    async def peek(self, queue: str, limit: int) -> list[ParkedMessage]:
        return self.messages[:limit]

    async def replay(self, queue: str, selection: Selection, *, dry_run: bool) -> list[Any]:
        return [m for m in self.messages if selection(m)]

    async def purge(self, queue: str, selection: Selection) -> list[ParkedMessage]:
        self.purged.append(selection)
        return [m for m in self.messages if selection(m)]


@pytest.fixture
def parking(monkeypatch: pytest.MonkeyPatch) -> FakeParking:
    fake = FakeParking()

    @contextlib.asynccontextmanager
    async def open_parking(settings: Any) -> AsyncIterator[FakeParking]:
        yield fake

    monkeypatch.setattr(dlq_cli, "open_parking", open_parking)
    return fake


PARKED_KEYS = {
    "position",
    "message_id",
    "correlation_id",
    "message_type",
    "reason",
    "original_queue",
    "attempts",
    "replays",
    "first_failed_at",
    "last_failed_at",
    "error",
    "size",
}


def test_dlq_list_json(runner: CliRunner, parking: FakeParking) -> None:
    result = invoke(runner, "dlq", "list", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["total"] == 2
    assert body["queues"][1] == {
        "queue": "t.payments.parking",
        "depth": 2,
        "reasons": {"malformed-json": 1, "retries-exhausted": 1},
        "scanned": 2,
    }


def test_dlq_list_table(runner: CliRunner, parking: FakeParking) -> None:
    result = invoke(runner, "dlq", "list")
    assert result.exit_code == 0, result.stderr
    assert "malformed-json 1, retries-exhausted 1" in result.stdout


def test_dlq_show_json_and_cards(runner: CliRunner, parking: FakeParking) -> None:
    result = invoke(runner, "dlq", "show", "payments", "--limit", "1", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["queue"], body["depth"], len(body["messages"])) == ("t.payments.parking", 2, 1)
    assert set(body["messages"][0]) == PARKED_KEYS

    human = invoke(runner, "dlq", "show", "payments")
    assert "#1 ProcessPayment malformed-json" in human.stdout
    assert str(SAGA_ID) in human.stdout


def test_dlq_unknown_queue_is_exit_2(runner: CliRunner, parking: FakeParking) -> None:
    result = invoke(runner, "dlq", "show", "nope")
    assert_one_line_error(result, code=2, contains="unknown parking queue 'nope'")


def test_dlq_replay_json_and_missing_ids(runner: CliRunner, parking: FakeParking) -> None:
    result = invoke(
        runner, "dlq", "replay", "payments", "--id", "m-2", "--id", "gone", "--dry-run", "--json"
    )
    assert result.exit_code == 1  # one id was not parked there
    body = json.loads(result.stdout)
    assert (body["dry_run"], body["count"], body["not_found"]) == (True, 1, ["gone"])
    assert body["messages"][0]["message_id"] == "m-2"
    assert "not parked in t.payments.parking: gone" in result.stderr


def view() -> SagaView:
    summary = SagaSummary(
        id=SAGA_ID,
        workflow="order",
        business_key="order-1",
        state="awaiting_payment",
        version=1,
        created_at=AT,
        updated_at=AT,
        finished_at=None,
        idle_seconds=7200.0,
    )
    return SagaView(
        summary=summary,
        data={"order_id": "order-1"},
        reason=None,
        compensation_target=None,
        outstanding=[OutstandingCommand(COMMAND_ID, "ProcessPayment", AT, AT)],
        compensations=[],
        timers=[PendingTimer("step-timeout", AT + timedelta(minutes=2), uuid.uuid4())],
        history=[
            HistoryEntry(
                at=AT,
                version=1,
                message_type="OrderSubmitted",
                message_id=uuid.uuid4(),
                outcome="started",
                from_state=None,
                to_state="awaiting_payment",
                commands=[{"type": "ProcessPayment", "message_id": str(COMMAND_ID)}],
                actor="message",
                note="",
            )
        ],
    )


class FakeAdmin:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.shown = view()

    async def show(self, ref: str) -> SagaView:
        if ref not in ("order-1", str(SAGA_ID)):
            raise SagaNotFound(f"no saga with id or business key {ref!r}")
        return self.shown

    async def list(self, **filters: Any) -> list[SagaSummary]:
        self.calls.append(("list", filters))
        return [view().summary]

    async def abort(self, ref: str, operator: str, reason: str) -> ActionResult:
        self.calls.append(("abort", ref, operator, reason))
        return ActionResult(SAGA_ID, "abort", operator, "awaiting_payment", "aborted", [])

    async def skip(self, ref: str, operator: str, reason: str, to: str | None) -> ActionResult:
        self.calls.append(("skip", ref, operator, reason, to))
        return ActionResult(SAGA_ID, "skip", operator, "awaiting_payment", "failed", [])


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    fake = FakeAdmin()

    @contextlib.asynccontextmanager
    async def open_admin(settings: Any) -> AsyncIterator[FakeAdmin]:
        from orchestrator.admin import SagaNotFound

        try:
            yield fake
        except SagaNotFound as exc:
            raise CliError(str(exc)) from None

    monkeypatch.setattr(saga_cli, "open_admin", open_admin)
    return fake


def test_saga_show_json_is_flat(runner: CliRunner, admin: FakeAdmin) -> None:
    result = invoke(runner, "saga", "show", "order-1", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["id"] == str(SAGA_ID)
    assert (body["state"], body["version"], body["finished_at"]) == ("awaiting_payment", 1, None)
    assert body["created_at"] == "2026-03-01T12:00:00+00:00"
    assert body["outstanding"] == [
        {
            "message_id": str(COMMAND_ID),
            "type": "ProcessPayment",
            "created_at": AT.isoformat(),
            "published_at": AT.isoformat(),
        }
    ]
    assert set(body) >= {"data", "timers", "compensations", "history", "reason", "idle_seconds"}
    assert set(body["history"][0]) == {
        "at",
        "version",
        "message_type",
        "message_id",
        "outcome",
        "from_state",
        "to_state",
        "commands",
        "actor",
        "note",
    }


def test_saga_show_human(runner: CliRunner, admin: FakeAdmin) -> None:
    result = invoke(runner, "saga", "show", "order-1")
    assert result.exit_code == 0, result.stderr
    for text in ("awaiting_payment", str(COMMAND_ID), "step-timeout", "OrderSubmitted", "2h00m"):
        assert text in result.stdout


REGISTERED = [
    {"command": "RefundPayment", "confirmed_by": "PaymentRefunded"},
    {"command": "ReleaseInventory", "confirmed_by": "InventoryReleased"},
]


@pytest.mark.parametrize(
    ("state", "finished", "target", "title"),
    [
        ("completed", True, None, "compensations registered (not run: the saga ended completed)"),
        ("aborted", True, None, "compensations registered (not run: the saga ended aborted)"),
        ("compensating", False, "failed", "compensations (undone from the top)"),
        ("compensation_failed", True, "failed", "compensations (undone from the top)"),
        ("awaiting_shipping", False, None, "(undone from the top if the saga compensates)"),
    ],
)
def test_saga_show_labels_the_compensation_stack_by_what_happened(
    runner: CliRunner, admin: FakeAdmin, state: str, finished: bool, target: str | None, title: str
) -> None:
    """A completed order still holds its stack of compensations; labelled as undone, it read
    as if the payment had been refunded."""
    summary = dataclasses.replace(
        admin.shown.summary, state=state, finished_at=AT if finished else None
    )
    admin.shown = dataclasses.replace(
        admin.shown, summary=summary, compensation_target=target, compensations=REGISTERED
    )
    result = invoke(runner, "saga", "show", "order-1")
    assert result.exit_code == 0, result.stderr
    assert title in result.stdout
    assert "RefundPayment" in result.stdout
    if target is None:
        assert "compensations (undone from the top)" not in result.stdout


def test_saga_show_unknown_is_one_line(runner: CliRunner, admin: FakeAdmin) -> None:
    result = invoke(runner, "saga", "show", "nope")
    assert_one_line_error(result, code=1, contains="no saga with id or business key 'nope'")


def test_saga_list_json_and_filters(runner: CliRunner, admin: FakeAdmin) -> None:
    result = invoke(runner, "saga", "list", "--stuck-for", "1h30m", "--state", "awaiting_payment")
    assert result.exit_code == 0, result.stderr
    assert "stuck sagas" in result.stdout
    assert admin.calls == [
        (
            "list",
            {
                "workflow": None,
                "state": "awaiting_payment",
                "stuck_for": timedelta(minutes=90),
                "active": False,
                "limit": 50,
            },
        )
    ]
    body = json.loads(invoke(runner, "saga", "list", "--json").stdout)
    assert (body["count"], body["limit"]) == (1, 50)
    assert body["sagas"][0]["business_key"] == "order-1"


def test_saga_actions_default_to_user_and_print_json(runner: CliRunner, admin: FakeAdmin) -> None:
    result = invoke(runner, "saga", "abort", "order-1", "--reason", "customer  called", "--json")
    assert result.exit_code == 0, result.stderr
    assert admin.calls == [("abort", "order-1", "ops-anna", "customer  called")]
    assert json.loads(result.stdout) == {
        "saga_id": str(SAGA_ID),
        "action": "abort",
        "operator": "ops-anna",
        "from_state": "awaiting_payment",
        "to_state": "aborted",
        "commands": [],
    }


def test_saga_skip_passes_to_and_by(runner: CliRunner, admin: FakeAdmin) -> None:
    result = invoke(
        runner, "saga", "skip", "order-1", "--reason", "r", "--to", "failed", "--by", "bo"
    )
    assert result.exit_code == 0, result.stderr
    assert admin.calls == [("skip", "order-1", "bo", "r", "failed")]
    assert "awaiting_payment → failed (skip by bo)" in result.stdout


# --- diagram -------------------------------------------------------------------------------------


def test_diagram_prints_mermaid(runner: CliRunner) -> None:
    result = runner.invoke(app, ["diagram", "order"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("stateDiagram-v2\n")
    assert "[*] --> awaiting_payment: OrderSubmitted" in result.stdout
    assert "classDef current" not in result.stdout


def test_diagram_highlights_a_saga(runner: CliRunner, admin: FakeAdmin) -> None:
    result = invoke(runner, "diagram", "order", "--saga", "order-1", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["saga"], body["state"], body["format"]) == (
        str(SAGA_ID),
        "awaiting_payment",
        "mermaid",
    )
    assert body["diagram"].endswith("    class awaiting_payment current\n")
