"""Notifications' pure decisions: each e-mail once per saga and template, and its rendering."""

from __future__ import annotations

import uuid

import pytest

from consumers.notifications import rules
from consumers.notifications.rules import (
    Record,
    Refuse,
    Template,
    decide_notice,
    decide_welcome,
    email_id_for,
    render,
    undeliverable,
)

SAGA = uuid.UUID("5a6a0000-0000-4000-8000-0000000000e1")
WELCOME, CANCELLED = Template.WELCOME, Template.ENROLLMENT_CANCELLED
WELCOME_ID = email_id_for(SAGA, WELCOME)


@pytest.mark.parametrize(
    ("recorded", "recipient", "expected"),
    [
        (set(), "ada@example.com", Record(WELCOME_ID, new=True)),
        ({WELCOME}, "ada@example.com", Record(WELCOME_ID, new=False)),
        # Already recorded wins over every refusal: a re-send reports the e-mail it recorded.
        ({WELCOME, CANCELLED}, "ada@example.invalid", Record(WELCOME_ID, new=False)),
        # The cancellation notice is the welcome's void marker.
        ({CANCELLED}, "ada@example.com", Refuse(rules.REASON_CANCELLED)),
        (set(), "ada@example.invalid", Refuse(rules.REASON_UNDELIVERABLE)),
        (set(), "ada@mail.EXAMPLE.INVALID", Refuse(rules.REASON_UNDELIVERABLE)),
    ],
)
def test_decide_welcome(recorded: set[Template], recipient: str, expected: Record | Refuse) -> None:
    assert decide_welcome(saga_id=SAGA, recorded=recorded, recipient=recipient) == expected


@pytest.mark.parametrize(
    ("recorded", "new"),
    [(set(), True), ({WELCOME}, True), ({CANCELLED}, False), ({WELCOME, CANCELLED}, False)],
)
def test_decide_notice_records_once_and_never_refuses(recorded: set[Template], new: bool) -> None:
    assert decide_notice(saga_id=SAGA, recorded=recorded) == Record(
        email_id_for(SAGA, CANCELLED), new=new
    )


def test_email_ids_are_deterministic_per_saga_and_template() -> None:
    other = uuid.UUID("5a6a0000-0000-4000-8000-0000000000e2")
    ids = {email_id_for(s, t) for s in (SAGA, other) for t in Template}
    assert len(ids) == 4
    assert email_id_for(SAGA, WELCOME) == WELCOME_ID
    assert all(len(i) <= 64 for i in ids)


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("a@example.com", False),
        ("a@invalid.example.com", False),
        ("a@example.invalid", True),
        ("a.invalid@example.com", False),
    ],
)
def test_undeliverable_is_the_reserved_invalid_domain(recipient: str, expected: bool) -> None:
    assert undeliverable(recipient) is expected


@pytest.mark.parametrize(
    ("template", "subject", "mentions"),
    [
        (WELCOME, "Welcome to Sagas 101", "seat in Sagas 101 is confirmed"),
        (CANCELLED, "Your enrollment in Sagas 101 was cancelled", "seat released"),
    ],
)
def test_render(template: Template, subject: str, mentions: str) -> None:
    rendered = render(template, course_title="Sagas 101", user_id="ada")
    assert rendered.subject == subject
    assert rendered.body.startswith("Hello ada,")
    assert mentions in rendered.body


def test_subject_is_clipped_to_its_column() -> None:
    rendered = render(CANCELLED, course_title="t" * 200, user_id="ada")
    assert len(rendered.subject) == 200
    assert rendered.subject.endswith("...")
