"""The mutant catalogue of ``make mutants`` stays applicable: every pattern
matches exactly once in the tree (a change to lua/ or the pipeline that moves
one fails here, naming the mutant, long before anyone runs the mutants), and a
scratch copy runs its own code. ``make mutants`` itself runs the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutants.__main__ import ROOT, CatalogueError, apply, check_imports, locate, scratch_copy
from tests.mutants.catalogue import MUTANTS, Mutant

#: what the catalogue must cover (issue 17); "buckets" joins with that feature
AREAS = {
    "stock",
    "per-user",
    "refill",
    "idempotency",
    "xack",
    "noack",
    "restart",
    "aof",
    "reclaimer",
    "shield",
    "invariants",
}


def test_the_catalogue_is_large_named_once_and_covers_every_area() -> None:
    assert len(MUTANTS) >= 25
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    assert {m.area for m in MUTANTS} >= AREAS


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_mutant_matches_exactly_once_and_changes_something(mutant: Mutant) -> None:
    assert mutant.old != mutant.new
    assert (ROOT / locate(mutant, ROOT)).is_file()


def test_a_pattern_that_no_longer_matches_stops_the_run_naming_the_mutant(
    tmp_path: Path,
) -> None:
    (tmp_path / "lua").mkdir()
    (tmp_path / "lua" / "a.lua").write_text("return 1\nreturn 1\n")
    gone = Mutant("gone", "stock", "return 2", "return 3", ())
    twice = Mutant("twice", "stock", "return 1", "return 3", ())
    with pytest.raises(CatalogueError, match=r"mutant gone: .* found 0 times"):
        locate(gone, tmp_path)
    with pytest.raises(CatalogueError, match=r"mutant twice: .* found 2 times \(lua/a.lua"):
        locate(twice, tmp_path)


def test_a_scratch_copy_imports_its_own_code_and_scripts(tmp_path: Path) -> None:
    tree = scratch_copy(tmp_path)
    check_imports(tree)  # seckill and seckill.lua from the copy
    mutant = next(m for m in MUTANTS if m.name == "confirm-no-xack")
    path = apply(mutant, tree)
    assert mutant.old not in (tree / path).read_text()
    assert mutant.old in (ROOT / path).read_text()  # the repo itself is untouched
