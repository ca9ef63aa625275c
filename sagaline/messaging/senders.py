"""Who may send what: the broker user a message came from, as RabbitMQ vouches for it.

RabbitMQ refuses a publish whose `user_id` property is not the publishing connection's own user
(unless that user has the impersonator tag), so `user_id` is the one property a sender cannot
forge. sagaline's processes set it on everything they publish; a consumer given a SenderPolicy
parks (`unauthorized-sender`) a guarded message from any other user before reading further.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.topology import ParkReason
from sagaline.messaging.errors import PermanentMessageError


@dataclass(frozen=True)
class SenderPolicy:
    """Which broker users a consumer takes its guarded messages from.

    An empty `allowed` set accepts every sender (development setups share one user). The
    consumer's own user is always accepted: its retry copies come back through the broker as
    published by itself.
    """

    allowed: frozenset[str] = frozenset()
    own_user: str | None = None
    guarded_types: frozenset[str] | None = None
    """Message types the policy applies to; None: every type (a worker's commands)."""

    def refusal(self, message_type: str, user_id: str | None) -> PermanentMessageError | None:
        """Why a message of `message_type` from `user_id` is refused, or None."""
        if not self.allowed:
            return None
        if self.guarded_types is not None and message_type not in self.guarded_types:
            return None
        if user_id is not None and (user_id in self.allowed or user_id == self.own_user):
            return None
        sender = "no user_id" if user_id is None else f"user_id {user_id[:64]!r}"
        return PermanentMessageError(
            ParkReason.UNAUTHORIZED_SENDER,
            f"{message_type} from {sender}, which is not an allowed sender",
        )
