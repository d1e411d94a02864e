"""``make mutants`` / ``python -m tests.mutants``: run the mutant catalogue.

Every mutant (tests/mutants/catalogue.py) is applied to its own scratch copy
of the repo (the tree without .git, .venv and caches, in a temporary
directory), and its tests run there with ``-x``; two at a time by default. A
mutant is *killed* when its tests fail, *survived* when they pass. First an
unmutated copy runs every test file of the catalogue once (the baseline): a
test that fails without a mutant would make every kill meaningless.

Prints a table (mutant, area, tests run, killed/survived, seconds) and exits
1 when a mutant survived, errored, or the baseline failed; 2 on bad usage or a
pattern that no longer matches exactly once.

    python -m tests.mutants                       # the whole catalogue, 2 at a time
    python -m tests.mutants --only confirm-no-xack,reader-noack
    python -m tests.mutants --list                # names, areas and files found
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.mutants.catalogue import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
#: not copied into a scratch tree
IGNORED = {".git", ".venv", "var", "node_modules", "__pycache__", "build", "dist"}
#: seconds one mutant's tests may take before it counts as an error
MUTANT_TIMEOUT = 600


class CatalogueError(Exception):
    """A mutant whose pattern no longer matches exactly once, or whose tests are gone."""


@dataclass
class Result:
    name: str
    area: str
    tests: str
    verdict: str  # killed, survived, error, passed (baseline), failed (baseline)
    seconds: float
    detail: str = ""


def locate(mutant: Mutant, root: Path) -> Path:
    """The one file under *root* (among ``mutant.where``) holding ``mutant.old``
    exactly once; CatalogueError naming the mutant otherwise."""
    hits: list[tuple[Path, int]] = []
    seen: set[Path] = set()
    for pattern in mutant.where:
        for path in sorted(root.glob(pattern)):
            if path in seen or not path.is_file() or any(p in IGNORED for p in path.parts):
                continue
            seen.add(path)
            count = path.read_text(encoding="utf-8").count(mutant.old)
            if count:
                hits.append((path.relative_to(root), count))
    total = sum(n for _, n in hits)
    if total != 1:
        where = ", ".join(f"{p} ({n}x)" for p, n in hits) or "nowhere"
        raise CatalogueError(
            f"mutant {mutant.name}: its pattern must match exactly once in"
            f" {' '.join(mutant.where)}, found {total} times ({where}): {mutant.old!r}"
        )
    for arg in mutant.tests:
        if not (root / arg.split("::")[0]).exists():
            raise CatalogueError(f"mutant {mutant.name}: no test file {arg.split('::')[0]}")
    return hits[0][0]


def scratch_copy(into: Path) -> Path:
    """The repo tree (no .git, .venv, caches) in *into*; ``seckill/lua`` points
    at ``lua/`` so that the copy's scripts are the ones imported (an editable
    install maps ``seckill.lua`` onto the original tree's ``lua/``)."""
    tree = into / "repo"

    def ignore(_: str, names: list[str]) -> set[str]:
        return {n for n in names if n in IGNORED or n.endswith(("_cache", ".egg-info"))}

    shutil.copytree(ROOT, tree, ignore=ignore, symlinks=True)
    link = tree / "seckill" / "lua"
    if not link.exists():
        link.symlink_to(Path("..") / "lua", target_is_directory=True)
    return tree


def apply(mutant: Mutant, tree: Path) -> Path:
    path = locate(mutant, tree)
    text = (tree / path).read_text(encoding="utf-8")
    (tree / path).write_text(text.replace(mutant.old, mutant.new, 1), encoding="utf-8")
    return path


def env_for_tests() -> dict[str, str]:
    env = dict(os.environ)
    # an external test Redis would be FLUSHALLed by two sessions at once
    env.pop("SECKILL_TEST_REDIS_URL", None)
    env["CI"] = "1"  # a skip is a failure here too: a skipped test kills nothing
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports(tree: Path) -> None:
    """The copy's code is what runs there, the scripts included."""
    probe = (
        "import seckill, seckill.lua, pathlib, sys; "
        "print(pathlib.Path(seckill.__file__).resolve()); "
        "print(pathlib.Path(seckill.lua.__file__).resolve())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for_tests(),
        check=True,
    ).stdout.split()
    real = tree.resolve()
    if not all(Path(p).is_relative_to(real) for p in out):
        raise CatalogueError(f"the scratch copy imports seckill from elsewhere: {out}")


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int | None, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(
            cmd,
            cwd=tree,
            capture_output=True,
            text=True,
            timeout=MUTANT_TIMEOUT,
            env=env_for_tests(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {MUTANT_TIMEOUT}s"
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    # pytest's summary lines ("FAILED tests/…"), not a captured log line at ERROR level
    failed = [ln for ln in lines if ln.startswith(("FAILED tests/", "ERROR tests/"))]
    summary = (failed[:1] or lines[-1:] or [done.stderr.strip()[-200:]])[0]
    return done.returncode, summary


def run_one(mutant: Mutant | None, tests: tuple[str, ...]) -> Result:
    started = time.monotonic()
    name, area = (mutant.name, mutant.area) if mutant else ("(baseline: no mutant)", "-")
    if mutant:
        shown = " ".join(t.removeprefix("tests/") for t in tests)
    else:
        shown = f"every test file of the catalogue ({len(tests)})"
    with tempfile.TemporaryDirectory(prefix="seckill-mutant-") as tmp:
        tree = scratch_copy(Path(tmp))
        try:
            check_imports(tree)
            if mutant:
                apply(mutant, tree)
        except (CatalogueError, subprocess.SubprocessError) as exc:
            return Result(name, area, shown, "error", time.monotonic() - started, str(exc))
        code, summary = run_tests(tree, tests)
    took = time.monotonic() - started
    if mutant is None:
        verdict = "passed" if code == 0 else "failed"
    elif code == 0:
        verdict = "survived"
    elif code == 1:  # tests ran and one failed
        verdict = "killed"
    else:  # interrupted, a collection error, a timeout: not a verdict on the mutant
        verdict = "error"
    return Result(name, area, shown, verdict, took, summary)


def killed_by(result: Result) -> str:
    """The first failing test of a killed mutant (``file::name``, without tests/)."""
    if result.verdict != "killed" or not result.detail.startswith(("FAILED ", "ERROR ")):
        return ""
    return result.detail.split(" ", 1)[1].split(" - ", 1)[0].removeprefix("tests/")


def table(results: list[Result]) -> str:
    heads = ("mutant", "area", "tests run", "result", "s", "killed by")
    rows = [(r.name, r.area, r.tests, r.verdict, f"{r.seconds:.0f}", killed_by(r)) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*heads), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    return "\n".join(x.rstrip() for x in out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__)
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--jobs", type=int, default=2, help="mutants at a time (default 2)")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = parser.parse_args(argv)
    chosen = MUTANTS
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in MUTANTS}
        if unknown:
            parser.error(f"no such mutant: {', '.join(sorted(unknown))}")
        chosen = [m for m in MUTANTS if m.name in names]
    if len({m.name for m in MUTANTS}) != len(MUTANTS):
        parser.error("two mutants share a name")
    try:
        found = {m.name: locate(m, ROOT) for m in chosen}  # every pattern, before any run
    except CatalogueError as exc:
        print(f"mutants: error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:40} {m.area:12} {found[m.name]}  ->  {' '.join(m.tests)}")
        return 0
    started = time.monotonic()
    jobs: list[tuple[Mutant | None, tuple[str, ...]]] = []
    if not args.no_baseline:
        files = sorted({t for m in chosen for t in m.tests})
        jobs.append((None, tuple(files)))
    jobs += [(m, m.tests) for m in chosen]
    print(f"{len(chosen)} mutants, {max(1, args.jobs)} at a time", flush=True)
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for result in pool.map(lambda job: run_one(*job), jobs):
            results.append(result)
            print(f"  {result.verdict:8} {result.name} ({result.seconds:.0f}s)", flush=True)
    wall = time.monotonic() - started
    print()
    print(table(results))
    bad = [r for r in results if r.verdict in ("survived", "error", "failed")]
    for r in bad:
        print(f"\n{r.verdict}: {r.name}: {r.detail}")
    killed = sum(r.verdict == "killed" for r in results)
    print(f"\n{killed}/{len(chosen)} mutants killed in {wall:.0f}s wall time")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
