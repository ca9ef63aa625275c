"""One WARNING when a process loses the broker, one INFO when it is back, with the outage's length.

aio-pika's robust connections reconnect on their own, and while the broker is away the client
libraries log every attempt (aiormq an ERROR "error when creating transport", aio-pika a WARNING
"Connection attempt … failed"), 13-15 ERROR lines per process for one outage, plus a traceback
per connection and an ERROR per channel when the link drops. LinkLog listens to the connections'
close and reconnect callbacks and says it once; QuietReconnects demotes those lines to DEBUG.

A process has several robust connections (FastStream's broker and sagaline's own): the link is
down from the first one lost until the last one is back, so one outage is one WARNING and one
INFO however many connections it took down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import AMQPConnectionError

from sagaline.messaging.errors import error_summary

log = logging.getLogger("sagaline.link")

Clock = Callable[[], float]

Rule = Callable[[logging.LogRecord], bool]


def _any(record: logging.LogRecord) -> bool:
    return True


def _lost_link(record: logging.LogRecord) -> bool:
    """aiormq's reader ended because the link went away (not, say, on a malformed frame)."""
    error = record.exc_info[1] if record.exc_info else None
    return isinstance(error, AMQPConnectionError | ConnectionError)


def _channel_reopen_on_a_closed_connection(record: logging.LogRecord) -> bool:
    """A robust channel tries to reopen itself on the connection that just dropped; the
    connection restores it once it is back."""
    args = record.args if isinstance(record.args, tuple) else ()
    callback = getattr(args[0], "callback", None) if args else None
    return getattr(callback, "__qualname__", "") == "RobustChannel._on_close" and any(
        isinstance(arg, RuntimeError) for arg in args
    )


# The client libraries' lines about one outage, as (logger, format string prefix, condition):
# per attempt (aiormq's ERROR "error when creating transport" is the flood), per connection
# and per channel. LinkLog says it once instead.
_OUTAGE_LINES: tuple[tuple[str, str, Rule], ...] = (
    ("aiormq.connection", "error when creating transport", _any),
    ("aiormq.connection", "Unexpected connection close from remote", _any),
    ("aiormq.connection", "Cancelling cause reader exited abnormally", _lost_link),
    ("aio_pika.robust_connection", "Connection to %s closed. Reconnecting", _any),
    ("aio_pika.robust_connection", 'Connection attempt to "%s" failed', _any),
    ("aio_pika.robust_connection", 'Connection attempt to "%s" cancelled', _any),
    ("aio_pika.robust_connection", "Reconnect attempt failed", _any),
    ("aio_pika.tools", "Callback %r error", _channel_reopen_on_a_closed_connection),
)
_LOGGERS = frozenset(name for name, _, _ in _OUTAGE_LINES)


class QuietReconnects(logging.Filter):
    """Demotes the libraries' outage lines to DEBUG (dropped unless the process logs at
    DEBUG): LinkLog reports the outage once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_outage_line(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def _is_outage_line(record: logging.LogRecord) -> bool:
    if record.name not in _LOGGERS or not isinstance(record.msg, str):
        return False
    return any(
        record.name == name and record.msg.startswith(prefix) and applies(record)
        for name, prefix, applies in _OUTAGE_LINES
    )


_QUIET = QuietReconnects()


def quiet_reconnect_attempts() -> None:
    """Install the filter on the libraries' loggers (idempotent: a filter is added once)."""
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(_QUIET)


class LinkLog:
    def __init__(self, consumer: str, *, clock: Clock = time.monotonic) -> None:
        quiet_reconnect_attempts()  # what this reports, the libraries would say per attempt
        self.consumer = consumer
        self.clock = clock
        self._down: set[str] = set()
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return bool(self._down)

    def watch(self, connection: AbstractRobustConnection, link: str) -> None:
        """Report `connection`'s drops and recoveries under the name `link`."""
        connection.close_callbacks.add(partial(self.on_close, link))
        connection.reconnect_callbacks.add(partial(self.on_reconnected, link))

    def broker_callbacks(self, link: str) -> dict[str, Any]:
        """`on_close` and `on_reconnected` for a FastStream RabbitBroker (it adds them to the
        robust connection it makes, as `watch` does)."""
        return {
            "on_close": [partial(self.on_close, link)],
            "on_reconnected": [partial(self.on_reconnected, link)],
        }

    def on_close(self, link: str, connection: Any, error: BaseException | None = None) -> None:
        # Our own close (shutdown) is no outage. aio-pika also calls this once per failed
        # channel restore while reconnecting; `lost` ignores a link already down.
        if not getattr(connection, "close_called", False):
            self.lost(link, error)

    def on_reconnected(self, link: str, connection: Any = None) -> None:
        self.restored(link)

    def lost(self, link: str, error: BaseException | None) -> None:
        if link in self._down:
            return
        self._down.add(link)
        if self._since is not None:
            return  # another connection of the same outage: already said
        self._since = self.clock()
        log.warning(
            "broker connection lost; reconnecting",
            extra={
                "consumer": self.consumer,
                "link": link,
                "error": error_summary(error) if error is not None else None,
            },
        )

    def restored(self, link: str) -> None:
        self._down.discard(link)
        if self._down or self._since is None:
            return
        outage = self.clock() - self._since
        self._since = None
        log.info(
            f"broker connection restored after {outage:.1f}s",
            extra={"consumer": self.consumer, "outage_seconds": round(outage, 1)},
        )
