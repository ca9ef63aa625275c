"""`sagaline up`'s decisions, without processes: backoff, restarts, giving up, clean stops."""

from __future__ import annotations

import signal

import pytest

from sagaline_tools.cli.supervisor import (
    Backoff,
    ChildSpec,
    ChildStatus,
    Phase,
    clean_stop,
    is_clean_exit,
    plan_children,
)

SPEC = ChildSpec("payments", ("python", "-m", "consumers", "payments"), 8081)
BACKOFF = Backoff(initial=1.0, factor=2.0, maximum=8.0, reset_after=60.0)


def phase(status: ChildStatus) -> Phase:
    """Read afresh after each event (an attribute read would be narrowed by mypy)."""
    return status.phase


def child(max_failures: int | None = None) -> ChildStatus:
    return ChildStatus(SPEC, backoff=BACKOFF, max_failures=max_failures)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [BACKOFF.delay(n) for n in range(0, 7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_survives_huge_failure_counts() -> None:
    assert BACKOFF.delay(10_000) == 8.0


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0.0}, {"factor": 0.5}, {"initial": 5.0, "maximum": 1.0}]
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)


def test_plan_puts_orchestrator_first_and_workers_on_following_ports() -> None:
    specs = plan_children(("payments", "inventory", "shipping"), 9000, python="/py")
    assert [(s.name, s.port) for s in specs] == [
        ("orchestrator", 9000),
        ("payments", 9001),
        ("inventory", 9002),
        ("shipping", 9003),
    ]
    assert specs[0].argv == ("/py", "-m", "orchestrator")
    assert specs[2].argv == ("/py", "-m", "consumers", "inventory")


def test_plan_rejects_ports_beyond_65535() -> None:
    with pytest.raises(ValueError, match="65536"):
        plan_children(("a", "b"), 65534)


@pytest.mark.parametrize(
    ("code", "clean"),
    [
        (0, True),
        (-signal.SIGTERM, True),
        (-signal.SIGINT, True),
        (128 + signal.SIGTERM, True),
        (1, False),
        (2, False),
        (-signal.SIGKILL, False),
        (-signal.SIGSEGV, False),
    ],
)
def test_clean_exit_codes(code: int, clean: bool) -> None:
    assert is_clean_exit(code) is clean


def test_a_pending_child_starts_at_once() -> None:
    status = child()
    assert status.should_start(now=0.0)
    status.started(pid=10, now=0.0)
    assert phase(status) is Phase.STARTING
    assert status.restarts == 0
    assert not status.should_start(now=1.0)


def test_readiness_moves_between_starting_ready_and_unready() -> None:
    status = child()
    status.started(pid=10, now=0.0)
    status.probed(False, "not answering")
    assert phase(status) is Phase.STARTING  # never ready yet: still starting
    status.probed(True)
    assert phase(status) is Phase.READY
    status.probed(False, "broker unreachable")
    assert phase(status) is Phase.UNREADY
    assert status.detail == "broker unreachable"
    status.probed(True)
    assert (status.phase, status.detail) == (Phase.READY, "")


def test_crash_schedules_a_restart_with_growing_delays() -> None:
    status = child()
    now = 0.0
    delays = []
    for _ in range(5):
        status.started(pid=1, now=now)
        now += 0.5  # crashes quickly every time
        status.exited(1, now, detail="ImportError")
        assert phase(status) is Phase.BACKOFF
        assert status.restart_at is not None
        delays.append(status.restart_at - now)
        assert not status.should_start(status.restart_at - 0.01)
        assert status.should_start(status.restart_at)
        now = status.restart_at
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert status.restarts == 4  # the first start is not a restart
    assert status.last_exit == 1
    assert status.detail == "ImportError"


def test_a_long_run_resets_the_backoff() -> None:
    status = child()
    status.started(pid=1, now=0.0)
    status.exited(1, now=1.0)
    status.started(pid=2, now=2.0)
    status.exited(1, now=3.0)
    assert status.failures == 2
    status.started(pid=3, now=4.0)
    status.exited(1, now=4.0 + BACKOFF.reset_after)  # was healthy for a minute
    assert status.failures == 1
    assert status.restart_at == 4.0 + BACKOFF.reset_after + BACKOFF.initial


def test_gives_up_after_max_failures_in_a_row() -> None:
    status = child(max_failures=3)
    status.started(pid=1, now=0.0)
    status.exited(1, now=0.1)
    status.started(pid=2, now=2.0)
    status.exited(1, now=2.1)
    assert phase(status) is Phase.BACKOFF
    status.started(pid=3, now=5.0)
    status.exited(1, now=5.1)
    assert phase(status) is Phase.FAILED
    assert status.failures == 3
    assert not status.should_start(now=1e9)


def test_a_spawn_failure_counts_as_a_crash() -> None:
    status = child()
    status.start_failed("cannot start: no such file", now=0.0)
    assert phase(status) is Phase.BACKOFF
    assert status.detail == "cannot start: no such file"


def test_late_probe_after_exit_is_ignored() -> None:
    status = child()
    status.started(pid=1, now=0.0)
    status.exited(1, now=0.5)
    status.probed(True)
    assert phase(status) is Phase.BACKOFF


def test_stop_of_a_running_child_is_clean_on_sigterm() -> None:
    status = child()
    status.started(pid=1, now=0.0)
    assert status.stop_requested() is True
    assert phase(status) is Phase.STOPPING
    status.exited(-signal.SIGTERM, now=1.0)
    assert phase(status) is Phase.STOPPED
    assert status.restart_at is None
    assert clean_stop([status])


def test_stop_while_waiting_to_restart_needs_no_signal() -> None:
    status = child()
    status.started(pid=1, now=0.0)
    status.exited(1, now=0.1)
    assert status.stop_requested() is False
    assert phase(status) is Phase.STOPPED
    assert not status.should_start(now=1e9)
    # The crash before the stop is history: the stop itself was clean.
    assert clean_stop([status])


def test_stop_is_unclean_when_killed_or_failing() -> None:
    killed = child()
    killed.started(pid=1, now=0.0)
    killed.stop_requested()
    killed.killed = True
    killed.exited(-signal.SIGKILL, now=30.0)
    assert not clean_stop([killed])

    erred = child()
    erred.started(pid=1, now=0.0)
    erred.stop_requested()
    erred.exited(1, now=1.0, detail="error during shutdown")
    assert not clean_stop([erred])
    assert erred.detail == "error during shutdown"


def test_a_given_up_child_makes_the_stop_unclean() -> None:
    status = child(max_failures=1)
    status.started(pid=1, now=0.0)
    status.exited(1, now=0.1)
    assert phase(status) is Phase.FAILED
    status.stop_requested()
    assert phase(status) is Phase.FAILED
    assert not clean_stop([status])


def test_last_error_survives_the_restart_until_ready() -> None:
    status = child()
    status.started(pid=1, now=0.0)
    status.exited(1, now=0.1, detail="KeyError: x")
    status.started(pid=2, now=2.0)
    assert status.last_error == "KeyError: x"
    assert status.detail == ""
    status.probed(True)
    assert status.last_error == ""
