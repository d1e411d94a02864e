"""The layering that the folder names promise (docs/architecture.md), checked
by import-linter with the contracts in pyproject.toml: a buy goes
http -> core -> redis, nothing imports a route module, the route modules are
independent. ``make lint`` runs the same check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_every_import_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_lower_layer_importing_a_higher_one_is_caught(tmp_path: Path) -> None:
    """The check is not vacuous: a copy of the package where the Redis layer
    imports the core layer breaks the first contract."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "seckill", copy / "seckill")
    shutil.copy(ROOT / "pyproject.toml", copy)
    keys = copy / "seckill" / "redis" / "keys.py"
    keys.write_text(keys.read_text() + "\nfrom seckill.core import views  # noqa: E402\n")
    result = lint_imports(copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "seckill.redis.keys -> seckill.core.views" in result.stdout
