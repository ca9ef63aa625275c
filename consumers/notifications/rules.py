"""Notification decisions and rendering, without I/O.

Each (saga, template) is recorded at most once; the e-mail id follows from the pair, so a re-sent
command reports the same id. Rendering is plain text from the command's fields only (no
lookups), so what was recorded is exactly what the command asked for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

UNDELIVERABLE_TLD = ".invalid"
"""Reserved by RFC 2606: the documented test rule for an address that cannot receive mail."""

REASON_UNDELIVERABLE = "undeliverable address"
REASON_CANCELLED = "enrollment already cancelled"
"""The saga's cancellation notice is recorded: a late welcome must not follow it."""

_SUBJECT_LIMIT = 200  # notifications.emails.subject


class Template(StrEnum):
    WELCOME = "welcome"
    ENROLLMENT_CANCELLED = "enrollment-cancelled"


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def render(template: Template, *, course_title: str, user_id: str) -> Rendered:
    if template is Template.WELCOME:
        subject = f"Welcome to {course_title}"
        body = (
            f"Hello {user_id},\n\n"
            f"your seat in {course_title} is confirmed. Your course access is being set up;\n"
            "you will find the course in your dashboard shortly.\n"
        )
    else:
        subject = f"Your enrollment in {course_title} was cancelled"
        body = (
            f"Hello {user_id},\n\n"
            f"we could not complete your enrollment in {course_title}, so it was cancelled\n"
            "and your seat released. Please ignore any earlier welcome message.\n"
        )
    return Rendered(_clip(subject), body)


def email_id_for(saga_id: uuid.UUID, template: Template) -> str:
    """Deterministic per (saga, template): the same e-mail is always reported with one id."""
    return f"em_{uuid.uuid5(saga_id, template.value).hex}"


def undeliverable(recipient: str) -> bool:
    return recipient.rpartition("@")[2].lower().endswith(UNDELIVERABLE_TLD)


@dataclass(frozen=True)
class Record:
    email_id: str
    new: bool
    """False when the e-mail was already recorded: nothing is written, it is reported."""


@dataclass(frozen=True)
class Refuse:
    reason: str


WelcomeDecision = Record | Refuse


def decide_welcome(
    *, saga_id: uuid.UUID, recorded: set[Template], recipient: str
) -> WelcomeDecision:
    """`recorded`: the templates already recorded for this saga."""
    email_id = email_id_for(saga_id, Template.WELCOME)
    if Template.WELCOME in recorded:
        return Record(email_id, new=False)
    if Template.ENROLLMENT_CANCELLED in recorded:
        return Refuse(REASON_CANCELLED)
    if undeliverable(recipient):
        return Refuse(REASON_UNDELIVERABLE)
    return Record(email_id, new=True)


def decide_notice(*, saga_id: uuid.UUID, recorded: set[Template]) -> Record:
    """A notice is a compensation: always recorded (once), never refused."""
    template = Template.ENROLLMENT_CANCELLED
    return Record(email_id_for(saga_id, template), new=template not in recorded)


def _clip(text: str) -> str:
    return text if len(text) <= _SUBJECT_LIMIT else text[: _SUBJECT_LIMIT - 3] + "..."
