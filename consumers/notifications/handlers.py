"""Notifications' command handlers: render, record once per (saga, template), reply."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.notifications import rules
from consumers.notifications.tables import SCHEMA, emails
from consumers.runtime import Handler, HandlerMap
from consumers.settings import WorkerSettings
from contracts.base import Command, ReplyEvent
from contracts.enrollment import (
    EnrollmentNoticeSent,
    SendEnrollmentNotice,
    SendWelcomeEmail,
    WelcomeEmailFailed,
    WelcomeEmailSent,
)
from contracts.envelope import Envelope

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def lock_saga(conn: AsyncConnection, saga_id: uuid.UUID) -> None:
    # Serialises a welcome racing its saga's cancellation notice (neither row may exist yet);
    # the unique (saga, template) constraint is the backstop.
    await conn.execute(_LOCK, {"key": f"{SCHEMA}:saga:{saga_id}"})


async def recorded_templates(conn: AsyncConnection, saga_id: uuid.UUID) -> set[rules.Template]:
    rows = await conn.scalars(select(emails.c.template).where(emails.c.saga_id == saga_id))
    return {rules.Template(value) for value in rows}


@dataclass(frozen=True)
class _Email:
    saga_id: uuid.UUID
    template: rules.Template
    recipient: str
    course_id: str
    user_id: str
    course_title: str


async def _record(conn: AsyncConnection, email_id: str, email: _Email) -> None:
    rendered = rules.render(email.template, course_title=email.course_title, user_id=email.user_id)
    await conn.execute(
        insert(emails).values(
            email_id=email_id,
            saga_id=email.saga_id,
            template=email.template.value,
            recipient=email.recipient,
            subject=rendered.subject,
            body=rendered.body,
            course_id=email.course_id,
            user_id=email.user_id,
        )
    )


async def send_welcome_email(
    conn: AsyncConnection, envelope: Envelope[SendWelcomeEmail]
) -> ReplyEvent:
    command = envelope.payload
    saga_id = envelope.correlation_id
    await lock_saga(conn, saga_id)
    decision = rules.decide_welcome(
        saga_id=saga_id,
        recorded=await recorded_templates(conn, saga_id),
        recipient=command.email,
    )
    if isinstance(decision, rules.Refuse):
        return WelcomeEmailFailed(
            course_id=command.course_id, user_id=command.user_id, reason=decision.reason
        )
    if decision.new:
        email = _Email(
            saga_id,
            rules.Template.WELCOME,
            command.email,
            command.course_id,
            command.user_id,
            command.course_title,
        )
        await _record(conn, decision.email_id, email)
    return WelcomeEmailSent(
        course_id=command.course_id, user_id=command.user_id, email_id=decision.email_id
    )


async def send_enrollment_notice(
    conn: AsyncConnection, envelope: Envelope[SendEnrollmentNotice]
) -> ReplyEvent:
    command = envelope.payload
    saga_id = envelope.correlation_id
    await lock_saga(conn, saga_id)
    decision = rules.decide_notice(
        saga_id=saga_id, recorded=await recorded_templates(conn, saga_id)
    )
    if decision.new:
        email = _Email(
            saga_id,
            rules.Template(command.kind),
            command.email,
            command.course_id,
            command.user_id,
            command.course_title,
        )
        await _record(conn, decision.email_id, email)
    return EnrollmentNoticeSent(
        course_id=command.course_id, user_id=command.user_id, email_id=decision.email_id
    )


def make_handlers(config: WorkerSettings) -> HandlerMap:
    handlers: dict[type[Command], Handler] = {
        SendWelcomeEmail: send_welcome_email,
        SendEnrollmentNotice: send_enrollment_notice,
    }
    return handlers


async def emails_of(conn: AsyncConnection, saga_id: uuid.UUID) -> dict[str, int]:
    """How many e-mails of each template are recorded for a saga (tests and demos)."""
    rows = await conn.execute(select(emails.c.template).where(emails.c.saga_id == saga_id))
    counts: dict[str, int] = {}
    for (template,) in rows:
        counts[template] = counts.get(template, 0) + 1
    return counts
