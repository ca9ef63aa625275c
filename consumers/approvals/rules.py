"""Approval request decisions, without I/O.

A request is opened once per (document, change, role). Releasing a request that was never opened
(the saga compensated before ReserveApprover ran) leaves it released, so a late ReserveApprover
cannot open it: the approver is never held for a change the saga gave up.
"""

from __future__ import annotations

from enum import StrEnum


class RequestStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    """Closed by RecordApprovalDecision: the change was approved."""
    RELEASED = "released"


class ReserveAction(StrEnum):
    OPEN = "open"
    KEEP = "keep"
    """Already open (or approved): a re-sent command changes nothing."""
    REFUSE = "refuse"
    """Released first: stays closed; the reply says so."""


def decide_reserve(status: RequestStatus | None) -> ReserveAction:
    if status is None:
        return ReserveAction.OPEN
    if status is RequestStatus.RELEASED:
        return ReserveAction.REFUSE
    return ReserveAction.KEEP


class ReleaseAction(StrEnum):
    RELEASE = "release"
    MARK = "mark"
    """Never opened: record it released so that a late reservation stays closed."""
    NOTHING = "nothing"


def decide_release(status: RequestStatus | None) -> ReleaseAction:
    if status is None:
        return ReleaseAction.MARK
    if status is RequestStatus.RELEASED:
        return ReleaseAction.NOTHING
    # An approved request is released too: the change failed after approval, nothing is pending.
    return ReleaseAction.RELEASE
