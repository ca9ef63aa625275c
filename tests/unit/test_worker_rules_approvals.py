"""The approvals worker's pure rules: requests open once, a release first keeps them closed."""

from __future__ import annotations

import pytest

from consumers.approvals.rules import (
    ReleaseAction,
    RequestStatus,
    ReserveAction,
    decide_release,
    decide_reserve,
)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (None, ReserveAction.OPEN),
        (RequestStatus.OPEN, ReserveAction.KEEP),
        (RequestStatus.APPROVED, ReserveAction.KEEP),
        (RequestStatus.RELEASED, ReserveAction.REFUSE),
    ],
)
def test_decide_reserve(status: RequestStatus | None, action: ReserveAction) -> None:
    assert decide_reserve(status) is action


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (None, ReleaseAction.MARK),
        (RequestStatus.OPEN, ReleaseAction.RELEASE),
        (RequestStatus.APPROVED, ReleaseAction.RELEASE),
        (RequestStatus.RELEASED, ReleaseAction.NOTHING),
    ],
)
def test_decide_release(status: RequestStatus | None, action: ReleaseAction) -> None:
    assert decide_release(status) is action
