"""The fault suite's mutants still apply: each one's line is in the tree exactly once, and the
mutated file still compiles. A refactor that moves a guarded line makes its mutant stale, which
the mutants run reports only when someone runs it (14 minutes); this catches it in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.mutants import MUTANTS, ROOT, Mutant


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_the_mutant_still_applies_and_compiles(mutant: Mutant) -> None:
    source = (ROOT / mutant.path).read_text()
    assert source.count(mutant.old) == 1, f"{mutant.name}: its line moved; update the mutant"
    mutated = source.replace(mutant.old, mutant.new)
    if mutant.path.endswith(".py"):
        compile(mutated, mutant.path, "exec")


def test_every_mutant_names_a_test_that_exists() -> None:
    for mutant in MUTANTS:
        target = mutant.test.split("::")[0]
        path = ROOT / target if target.startswith("tests/") else ROOT / "tests/faults" / target
        assert Path(path).exists(), f"{mutant.name}: {mutant.test} does not exist"
