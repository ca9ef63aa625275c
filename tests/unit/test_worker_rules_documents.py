"""The documents worker's pure rules: tiers from metadata, each step once, restoring the index."""

from __future__ import annotations

import pytest

from consumers.documents import rules
from consumers.documents.rules import (
    IndexUpdate,
    Produce,
    Refuse,
    Report,
    RestoreAction,
    Step,
    TierRule,
    UndoAction,
)
from contracts.documents import DocumentMetadata

# The seed rows of migration 0004, as rules.
TIERS = (
    TierRule(1, "standard schema changes", 24, 12, ("data_steward",)),
    TierRule(
        2,
        "tables, views and procedures",
        48,
        24,
        ("data_steward", "dba"),
        object_types=frozenset({"table", "view", "procedure"}),
    ),
    TierRule(
        3,
        "PII or financial data",
        72,
        36,
        ("data_steward", "dba", "compliance"),
        on_pii=True,
        on_financial=True,
    ),
    TierRule(
        4,
        "critical systems",
        120,
        60,
        ("data_steward", "dba", "compliance", "governance_lead"),
        on_critical=True,
    ),
)


def meta(object_type: str = "schema", **flags: bool) -> DocumentMetadata:
    return DocumentMetadata.model_validate({"object_type": object_type, **flags})


@pytest.mark.parametrize(
    ("metadata", "tier", "sla"),
    [
        (meta("schema"), 1, 24),
        (meta("column"), 1, 24),
        (meta("table"), 2, 48),
        (meta("view"), 2, 48),
        (meta("procedure"), 2, 48),
        (meta("schema", contains_pii=True), 3, 72),
        (meta("table", contains_financial=True), 3, 72),
        (meta("schema", critical_system=True), 4, 120),
        (meta("table", contains_pii=True, critical_system=True), 4, 120),
    ],
)
def test_tier_follows_from_metadata(metadata: DocumentMetadata, tier: int, sla: int) -> None:
    rule = rules.tier_for(metadata, TIERS)
    assert rule is not None
    assert (rule.tier, rule.sla_hours) == (tier, sla)
    assert len(rule.roles) == tier


def test_tier_rules_come_from_the_table_not_code() -> None:
    # An operator adds "function" to tier 2 and lengthens its SLA: no code involved.
    edited = (TIERS[0], TierRule(2, "t", 60, 30, ("data_steward", "dba"), frozenset({"function"})))
    rule = rules.tier_for(meta("function"), edited)
    assert rule is not None
    assert (rule.tier, rule.sla_hours) == (2, 60)


def test_no_base_tier_means_no_tier() -> None:
    assert rules.tier_for(meta("schema"), TIERS[1:]) is None


@pytest.mark.parametrize(
    ("flags", "sensitive"),
    [
        ({}, False),
        ({"contains_pii": True}, True),
        ({"contains_financial": True}, True),
        ({"critical_system": True}, False),
    ],
)
def test_sensitive_content(flags: dict[str, bool], sensitive: bool) -> None:
    assert rules.is_sensitive(meta("schema", **flags)) is sensitive


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"voided": False, "existing": None, "drill": None}, Produce()),
        ({"voided": False, "existing": True, "drill": None}, Report()),
        ({"voided": False, "existing": True, "drill": "filing"}, Report()),
        ({"voided": False, "existing": False, "drill": None}, Refuse(rules.REASON_UNDONE)),
        ({"voided": True, "existing": None, "drill": None}, Refuse(rules.REASON_VOIDED)),
        (
            {"voided": False, "existing": None, "drill": None, "missing": "no draft"},
            Refuse("no draft"),
        ),
        ({"voided": False, "existing": None, "drill": "index"}, Produce()),
    ],
)
def test_decide_filing_step(kwargs: dict[str, object], expected: rules.StepDecision) -> None:
    assert rules.decide_step(Step.FILING, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("step", list(Step))
def test_each_failure_drill_refuses_its_own_step(step: Step) -> None:
    decision = rules.decide_step(step, voided=False, existing=None, drill=step.value)
    assert isinstance(decision, Refuse)
    assert "failure drill" in decision.reason


@pytest.mark.parametrize(
    ("existing", "action"),
    [(True, UndoAction.UNDO), (False, UndoAction.NOTHING), (None, UndoAction.VOID)],
)
def test_decide_undo(existing: bool | None, action: UndoAction) -> None:
    assert rules.decide_undo(existing) is action


def test_versions_count_per_document_from_one() -> None:
    assert [rules.next_version(None), rules.next_version(1), rules.next_version(7)] == [1, 2, 8]


@pytest.mark.parametrize(
    ("ours", "current", "action"),
    [
        (None, None, RestoreAction.VOID),
        (None, 3, RestoreAction.VOID),
        (IndexUpdate(2, 1, restored=True), 1, RestoreAction.NOTHING),
        (IndexUpdate(2, 1, restored=False), 2, RestoreAction.ROLL_BACK),
        (IndexUpdate(1, None, restored=False), 1, RestoreAction.ROLL_BACK),
        (IndexUpdate(2, 1, restored=False), 3, RestoreAction.SUPERSEDED),
    ],
)
def test_decide_restore(
    ours: IndexUpdate | None, current: int | None, action: RestoreAction
) -> None:
    assert rules.decide_restore(ours, current) is action


def test_library_location() -> None:
    assert rules.library_location("doc-1", 3) == "library/doc-1/v3"


def test_the_migration_seeds_exactly_these_tiers() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0004_documents.py"
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seeded = tuple(
        TierRule(tier, name, sla, esc, tuple(roles), frozenset(types), pii, fin, crit)
        for tier, name, sla, esc, roles, types, pii, fin, crit in module.TIERS
    )
    assert seeded == TIERS
