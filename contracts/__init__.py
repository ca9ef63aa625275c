"""Message contracts of sagaline: the envelope, every event and command, and the broker topology.

This package is what other services import to publish to sagaline: it has no I/O and no
dependency beyond pydantic.
"""

from contracts.base import Command, Event, Message, ReplyEvent
from contracts.envelope import Envelope, EnvelopeHeader, new_envelope
from contracts.registry import MESSAGE_TYPES, message_class
from contracts.topology import Topology

__all__ = [
    "MESSAGE_TYPES",
    "Command",
    "Envelope",
    "EnvelopeHeader",
    "Event",
    "Message",
    "ReplyEvent",
    "Topology",
    "message_class",
    "new_envelope",
]
