"""Failure kinds and what each one means for a delivery."""

from __future__ import annotations

from contracts.topology import ParkReason


class ReportableError(Exception):
    """An error whose message is safe to show operators: it never contains payload values."""


class PermanentMessageError(ReportableError):
    """The message can never succeed as it is: park it at once with a reason."""

    def __init__(self, reason: ParkReason, summary: str) -> None:
        super().__init__(f"{reason}: {summary}")
        self.reason = reason
        self.summary = summary[:500]


def error_summary(exc: BaseException) -> str:
    """A short description of an error for headers and logs, without payload values.

    Messages of arbitrary exceptions may quote input (a KeyError names the missing key), so only
    our own ReportableErrors contribute their text; others give their type name.
    """
    name = type(exc).__qualname__
    if isinstance(exc, PermanentMessageError):
        return exc.summary
    if isinstance(exc, ReportableError):
        return f"{name}: {str(exc)[:400]}"
    return name
