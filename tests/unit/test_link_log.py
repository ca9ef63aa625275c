"""Broker outages in the logs (sagaline.messaging.link_log): one WARNING when the link drops,
one INFO with the outage's length when it is back, the libraries' per-attempt lines demoted."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from sagaline.messaging.link_log import LinkLog, QuietReconnects, quiet_reconnect_attempts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def link(clock: Clock) -> LinkLog:
    return LinkLog("payments", clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sagaline.link"]


LIVE = SimpleNamespace(close_called=False)


def test_one_warning_then_one_info_with_the_outage_length(
    link: LinkLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    link.on_close("sagaline", LIVE, ConnectionResetError("peer gone"))
    clock.now += 12.34
    # While reconnecting, aio-pika calls the close callbacks again for each failed restore.
    link.on_close("sagaline", LIVE, ConnectionRefusedError())
    assert link.down
    link.on_reconnected("sagaline", LIVE)
    assert not link.down
    assert lines(caplog) == [
        ("WARNING", "broker connection lost; reconnecting"),
        ("INFO", "broker connection restored after 12.3s"),
    ]
    warning, info = [r for r in caplog.records if r.name == "sagaline.link"]
    assert (warning.consumer, warning.link, warning.error) == (
        "payments",
        "sagaline",
        "ConnectionResetError",
    )
    assert info.outage_seconds == 12.3


def test_one_outage_of_several_connections_is_reported_once(
    link: LinkLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    link.on_close("faststream", LIVE, None)
    clock.now += 1.0
    link.on_close("sagaline", LIVE, None)
    clock.now += 4.0
    link.on_reconnected("faststream", LIVE)
    assert link.down and len(lines(caplog)) == 1  # the other one is still away
    clock.now += 2.0
    link.on_reconnected("sagaline", LIVE)
    assert lines(caplog)[1] == ("INFO", "broker connection restored after 7.0s")


def test_our_own_close_and_a_first_connect_are_no_outage(
    link: LinkLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    link.on_close("sagaline", SimpleNamespace(close_called=True), None)
    link.on_reconnected("sagaline", LIVE)
    assert lines(caplog) == []
    assert not link.down


def test_a_second_outage_is_reported_again(
    link: LinkLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for outage in (3.0, 5.0):
        link.on_close("sagaline", LIVE, None)
        clock.now += outage
        link.on_reconnected("sagaline", LIVE)
    assert [level for level, _ in lines(caplog)] == ["WARNING", "INFO", "WARNING", "INFO"]
    assert lines(caplog)[3][1] == "broker connection restored after 5.0s"


@pytest.fixture
def root_level() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    before = root.level
    yield root
    root.setLevel(before)


def record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("x",), None)


@pytest.mark.parametrize(
    ("name", "level", "msg"),
    [
        ("aiormq.connection", logging.ERROR, "error when creating transport: %r"),
        ("aiormq.connection", logging.ERROR, 'Unexpected connection close from remote "%s"'),
        (
            "aio_pika.robust_connection",
            logging.WARNING,
            'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
        ),
        ("aio_pika.robust_connection", logging.ERROR, "Reconnect attempt failed %s due to %s"),
        ("aio_pika.robust_connection", logging.INFO, "Connection to %s closed. Reconnecting"),
    ],
)
def test_per_attempt_lines_are_demoted_to_debug(
    root_level: logging.Logger, name: str, level: int, msg: str
) -> None:
    root_level.setLevel(logging.INFO)
    line = record(name, level, msg)
    assert not QuietReconnects().filter(line)
    root_level.setLevel(logging.DEBUG)
    line = record(name, level, msg)
    assert QuietReconnects().filter(line)
    assert (line.levelno, line.levelname) == (logging.DEBUG, "DEBUG")


@pytest.mark.parametrize(
    ("name", "msg"),
    [
        ("aiormq.connection", "Connection %r was blocked by: %r"),
        ("aio_pika.robust_connection", "Failed to execute close callbacks for %s"),
        ("sagaline.delivery", "error when creating transport"),
    ],
)
def test_other_lines_pass_unchanged(root_level: logging.Logger, name: str, msg: str) -> None:
    root_level.setLevel(logging.INFO)
    line = record(name, logging.ERROR, msg)
    assert QuietReconnects().filter(line)
    assert line.levelno == logging.ERROR


def test_the_filter_is_installed_once(link: LinkLog) -> None:
    quiet_reconnect_attempts()
    quiet_reconnect_attempts()
    for name in ("aiormq.connection", "aio_pika.robust_connection"):
        quiet = [f for f in logging.getLogger(name).filters if isinstance(f, QuietReconnects)]
        assert len(quiet) == 1
