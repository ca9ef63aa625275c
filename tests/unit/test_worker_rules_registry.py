"""The worker registry, the shared runtime's pure parts, and `python -m consumers` arguments."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from consumers import WORKERS, WorkerSettings
from consumers.__main__ import main
from consumers.inbox import reply_envelope, reply_message_id
from contracts.envelope import new_envelope
from contracts.ids import derived_id
from contracts.order import PaymentRefunded, RefundPayment
from contracts.routes import WORKER_COMMANDS
from contracts.topology import Topology

ROOT = Path(__file__).resolve().parents[2]


def test_registry_covers_every_routed_worker() -> None:
    assert set(WORKERS) == set(WORKER_COMMANDS)


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_handlers_match_bound_commands(name: str) -> None:
    spec = WORKERS[name]
    assert spec.commands == WORKER_COMMANDS[name]
    assert set(spec.handlers(WorkerSettings())) == set(spec.commands)
    assert spec.inbox.schema == spec.schema
    assert {t.schema for t in spec.metadata.tables.values()} == {spec.schema}
    topology = Topology(namespace="ns")
    assert sorted(spec.bindings(topology)) == sorted(
        ("ns.commands", c.message_type) for c in WORKER_COMMANDS[name]
    )


def test_reply_envelope_ids() -> None:
    saga = uuid.uuid4()
    command = new_envelope(RefundPayment(order_id="o-1"), correlation_id=saga)
    reply = reply_envelope(command, PaymentRefunded(order_id="o-1", amount_cents=0))
    assert reply.message_id == reply_message_id(command.message_id)
    assert reply.message_id == derived_id(command.message_id, "reply")
    assert reply.correlation_id == saga
    assert reply.causation_id == command.message_id
    assert reply.type == "PaymentRefunded"


def test_fail_commands_setting_parses_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_FAIL_COMMANDS", "ProcessPayment, ReserveInventory,")
    assert WorkerSettings().fail_commands == {"ProcessPayment", "ReserveInventory"}
    monkeypatch.delenv("SAGALINE_FAIL_COMMANDS")
    assert WorkerSettings().fail_commands == frozenset()


@pytest.mark.parametrize("argv", [[], ["nope"], ["payments", "extra"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "payments|inventory|shipping" in err


def test_unknown_worker_exits_2_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumers", "billing"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"unknown worker 'billing'; expected one of: {'|'.join(WORKERS)}"
    )
