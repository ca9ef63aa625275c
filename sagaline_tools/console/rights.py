"""Who may do what: pure decisions, one table, no I/O.

Viewers read. Operators replay, retry, skip, compensate and move timers. Purging, aborting,
migrating sagas to another workflow version and bulk replays (more than the bulk limit of
messages at once) are an admin's, or, when SAGALINE_CONSOLE_APPROVALS=second-operator, an
operator's with a second operator's approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ROLES = ("viewer", "operator", "admin")


class Action(StrEnum):
    RETRY = "retry"
    SKIP = "skip"
    COMPENSATE = "compensate"
    ABORT = "abort"
    TIMER_CANCEL = "timer-cancel"
    TIMER_RESCHEDULE = "timer-reschedule"
    REPLAY = "replay"
    PURGE = "purge"
    JOB_CONTROL = "job-control"
    APPROVE = "approve"
    MIGRATE = "migrate"


OPERATOR_ACTIONS = {
    Action.RETRY,
    Action.SKIP,
    Action.COMPENSATE,
    Action.TIMER_CANCEL,
    Action.TIMER_RESCHEDULE,
    Action.REPLAY,
    Action.JOB_CONTROL,
    Action.APPROVE,
}
GUARDED = {Action.ABORT, Action.PURGE, Action.MIGRATE}
"""Destructive (or, migrating, changing many sagas at once) whatever their size: an admin's,
or approved by a second operator."""


class Verdict(StrEnum):
    ALLOWED = "allowed"
    NEEDS_APPROVAL = "needs-approval"
    REFUSED = "refused"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    why: str = ""


def decide(
    role: str, action: Action, *, size: int = 1, bulk_limit: int = 100, four_eyes: bool = False
) -> Decision:
    if role not in ROLES:
        return Decision(Verdict.REFUSED, f"unknown role {role!r}")
    if role == "viewer":
        return Decision(Verdict.REFUSED, "viewers can look but not act")
    if role == "admin":
        return Decision(Verdict.ALLOWED)
    guarded = action in GUARDED or (action == Action.REPLAY and size > bulk_limit)
    if not guarded:
        return Decision(Verdict.ALLOWED if action in OPERATOR_ACTIONS else Verdict.REFUSED)
    what = f"{action.value} of {size} messages" if action == Action.REPLAY else action.value
    if four_eyes:
        return Decision(Verdict.NEEDS_APPROVAL, f"{what} needs a second operator's approval")
    return Decision(Verdict.REFUSED, f"{what} needs an admin")
