"""Documents' decisions, without I/O: approval tiers, and doing or undoing each step once.

Every step (draft, final, filing, index update) happens at most once per document change. Its
undo deletes what the step made, or, when the step has not run yet (its command was overtaken
by the compensation, e.g. after a step timeout), leaves a void marker that refuses the step
later: a late command must not resurrect what the saga already gave up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from contracts.documents import DocumentMetadata, FailureDrill


class Step(StrEnum):
    DRAFT = "draft"
    FINAL = "final"
    FILING = "filing"
    INDEX = "index"


REASON_VOIDED = "undone before it ran (void marker)"
REASON_UNDONE = "already undone by compensation"
REASON_NO_TIER = "no approval tier matches the document"
REASON_NO_DRAFT = "no current draft for this change"
REASON_DRAFT_VERSION = "draft version does not match"
REASON_NO_FINAL = "no current final for this change"
REASON_NOT_FILED = "the final is not filed"

_DRILL_REASONS: dict[Step, str] = {
    Step.DRAFT: "draft generator refused the document (failure drill)",
    Step.FINAL: "final generator refused the draft (failure drill)",
    Step.FILING: "document library refused the document (failure drill)",
    Step.INDEX: "master index refused the update (failure drill)",
}


# --- approval tiers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TierRule:
    """One row of documents.approval_tiers."""

    tier: int
    name: str
    sla_hours: int
    escalation_hours: int
    roles: tuple[str, ...]
    object_types: frozenset[str] = frozenset()
    on_pii: bool = False
    on_financial: bool = False
    on_critical: bool = False

    @property
    def is_default(self) -> bool:
        """A tier without criteria matches every document (the base tier)."""
        return not self.object_types and not (self.on_pii or self.on_financial or self.on_critical)

    def matches(self, metadata: DocumentMetadata) -> bool:
        return (
            self.is_default
            or metadata.object_type in self.object_types
            or (self.on_pii and metadata.contains_pii)
            or (self.on_financial and metadata.contains_financial)
            or (self.on_critical and metadata.critical_system)
        )


def tier_for(metadata: DocumentMetadata, tiers: Iterable[TierRule]) -> TierRule | None:
    """The highest tier whose criteria the document meets (None: the table has no base tier)."""
    return max((t for t in tiers if t.matches(metadata)), key=lambda t: t.tier, default=None)


def is_sensitive(metadata: DocumentMetadata) -> bool:
    """Sensitive content is never auto-approved (confidence routing)."""
    return metadata.contains_pii or metadata.contains_financial


# --- doing a step once -------------------------------------------------------------------------


@dataclass(frozen=True)
class Produce:
    """Do the step now."""


@dataclass(frozen=True)
class Report:
    """Already done for this change: report what was made, change nothing."""


@dataclass(frozen=True)
class Refuse:
    reason: str


StepDecision = Produce | Report | Refuse


def decide_step(
    step: Step,
    *,
    voided: bool,
    existing: bool | None,
    drill: FailureDrill | None,
    missing: str | None = None,
) -> StepDecision:
    """`existing`: None when the change has no record of this step, True when its result is
    current, False when it was undone. `missing`: why the step's input is not there, if it is not.
    """
    if voided:
        return Refuse(REASON_VOIDED)
    if existing is True:
        return Report()
    if existing is False:
        return Refuse(REASON_UNDONE)
    if missing is not None:
        return Refuse(missing)
    if drill == step.value:
        return Refuse(_DRILL_REASONS[step])
    return Produce()


class UndoAction(StrEnum):
    UNDO = "undo"
    VOID = "void"
    """Nothing to undo yet: leave a marker that refuses the step later."""
    NOTHING = "nothing"


def decide_undo(existing: bool | None) -> UndoAction:
    if existing is True:
        return UndoAction.UNDO
    if existing is False:
        return UndoAction.NOTHING
    return UndoAction.VOID


def next_version(highest: int | None) -> int:
    """Versions count per document and are never reused, not even after a deletion."""
    return 1 if highest is None else highest + 1


def library_location(document_id: str, final_version: int) -> str:
    return f"library/{document_id}/v{final_version}"


# --- restoring the master index ----------------------------------------------------------------


@dataclass(frozen=True)
class IndexUpdate:
    """The master index version one change created."""

    version: int
    previous_version: int | None
    restored: bool


class RestoreAction(StrEnum):
    ROLL_BACK = "roll-back"
    """The entry is still this change's version: put the previous version back (or remove the
    entry when the change created it)."""
    SUPERSEDED = "superseded"
    """A later change updated the entry since: keep that one, only mark this update restored
    (rolling back under it would silently drop the later change)."""
    VOID = "void"
    NOTHING = "nothing"


def decide_restore(ours: IndexUpdate | None, current_version: int | None) -> RestoreAction:
    if ours is None:
        return RestoreAction.VOID
    if ours.restored:
        return RestoreAction.NOTHING
    if current_version == ours.version:
        return RestoreAction.ROLL_BACK
    return RestoreAction.SUPERSEDED
