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
    # Driver errors wrapped by SQLAlchemy: the driver's class and SQLSTATE say what went wrong
    # (UndefinedTableError 42P01) without quoting any value.
    orig = getattr(exc, "orig", None)
    cause = orig if isinstance(orig, BaseException) else exc.__cause__
    if cause is not None:
        sqlstate = getattr(cause, "sqlstate", None)
        detail = type(cause).__qualname__ + (f" {sqlstate}" if isinstance(sqlstate, str) else "")
        return f"{name} ({detail})"
    return name
