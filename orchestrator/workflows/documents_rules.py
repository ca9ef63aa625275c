"""Confidence routing and approval bookkeeping of the document workflow (pure, no I/O).

Bands, from the seed: a quality score >= 0.95 with no sensitive content is auto-approved; a score
>= 0.80 needs a single approver; anything else needs the tier's full chain. Sensitive content is
never auto-approved, however high its score: it falls to the single-approver band.

The single approver is the tier's most senior role (the last of its chain): a tier exists because
of that role's concern (compliance for PII, the governance lead for critical systems), so the one
signature the band asks for is that role's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from contracts.documents import Route, Signoff

AUTO_APPROVE_AT = 0.95
SINGLE_APPROVER_AT = 0.80


def route_for(quality_score: float, sensitive: bool) -> Route:
    if quality_score >= AUTO_APPROVE_AT and not sensitive:
        return "auto"
    if quality_score >= SINGLE_APPROVER_AT:
        return "single"
    return "full"


def required_roles(route: Route, tier_roles: Sequence[str]) -> tuple[str, ...]:
    """The roles that must approve, in chain order (none for auto-approval)."""
    if route == "auto":
        return ()
    if route == "single":
        return (tier_roles[-1],)
    return tuple(tier_roles)


class Answer(StrEnum):
    COUNTS = "counts"
    NOT_REQUIRED = "role not required"
    ALREADY_ANSWERED = "role already answered"


def classify_answer(role: str, required: Iterable[str], signoffs: Iterable[Signoff]) -> Answer:
    """Whether an approval or rejection from `role` decides anything.

    A role answers once: its first answer counts, a later one (a duplicate, or the same role
    changing its mind) is recorded in history and changes nothing.
    """
    if role not in required:
        return Answer.NOT_REQUIRED
    if any(s.role == role for s in signoffs):
        return Answer.ALREADY_ANSWERED
    return Answer.COUNTS


def pending_roles(required: Iterable[str], signoffs: Iterable[Signoff]) -> tuple[str, ...]:
    answered = {s.role for s in signoffs}
    return tuple(role for role in required if role not in answered)
