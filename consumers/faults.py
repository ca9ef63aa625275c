"""The fault-injection switch (SAGALINE_FAIL_COMMANDS): make chosen command types fail transiently.

Tests only. It raises where a real handler would hit a transient error (inside the transaction,
after the inbox check), so the delivery goes through the same retry and parking ladder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from contracts.envelope import Envelope
from sagaline.messaging.errors import ReportableError

log = logging.getLogger("consumers.faults")


class InjectedFault(ReportableError):
    """A deliberate transient failure; its text names only the command type."""


@dataclass(frozen=True)
class FaultSwitch:
    fail_commands: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        return bool(self.fail_commands)

    def check(self, envelope: Envelope[Any], attempt: int) -> None:
        """Raise InjectedFault when this command type is switched to fail."""
        if envelope.type not in self.fail_commands:
            return
        log.warning(
            "fault injected",
            extra={
                "message_id": str(envelope.message_id),
                "correlation_id": str(envelope.correlation_id),
                "message_type": envelope.type,
                "attempt": attempt,
            },
        )
        raise InjectedFault(f"injected failure for {envelope.type} (SAGALINE_FAIL_COMMANDS)")
