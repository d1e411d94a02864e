"""deploy/prometheus with Prometheus's own checker: the rules and the scrape
config are valid (``promtool check``), every alert and recording rule passes
its unit tests on synthetic series (``promtool test rules``), and every alert
has a unit test that makes it fire, a runbook and a severity.

promtool comes with Debian's ``prometheus`` package (.ci/run installs it);
without it these tests skip, and fail under CI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.ci import missing

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(PROM.glob("*.yml"))
UNIT_TESTS = sorted((PROM / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning"}
SHIPPED_TOKEN_FILE = "/etc/prometheus/secrets/seckill-metrics-token"

pytestmark = pytest.mark.ops


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        missing("promtool is not installed (Debian package prometheus)")
    return found


def run(promtool: str, *args: str | Path) -> str:
    result = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def rules(kind: str) -> list[dict[str, Any]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [rule for rule in group["rules"] if kind in rule]
    return found


def test_the_rule_files_are_what_the_glob_finds() -> None:
    """``promtool check rules deploy/prometheus/*.yml`` is the operator's
    command: only rule files may match it (the scrape config is in scrape/)."""
    assert [p.name for p in RULE_FILES] == ["alerts.yml", "recording.yml"]
    assert len(UNIT_TESTS) >= 2


def test_promtool_checks_the_rules_and_the_scrape_config(promtool: str, tmp_path: Path) -> None:
    out = run(promtool, "check", "rules", *RULE_FILES)
    assert out.count("SUCCESS") == len(RULE_FILES)
    # the scrape config as shipped, its token file (a Secret on Prometheus's
    # side) made here, its rule files beside it
    token = tmp_path / "seckill-metrics-token"
    token.write_text("a-metrics-token-of-the-operator\n")
    shipped = (PROM / "scrape" / "prometheus.yml").read_text()
    assert shipped.count(SHIPPED_TOKEN_FILE) == 2  # both jobs
    (tmp_path / "scrape").mkdir()
    config = tmp_path / "scrape" / "prometheus.yml"
    config.write_text(shipped.replace(SHIPPED_TOKEN_FILE, str(token)))
    for rules_file in RULE_FILES:
        shutil.copy(rules_file, tmp_path / rules_file.name)
    out = run(promtool, "check", "config", config)
    assert "is valid prometheus config file" in out and out.count("SUCCESS") == 4, out


def test_promtool_unit_tests_pass(promtool: str) -> None:
    out = run(promtool, "test", "rules", *UNIT_TESTS)
    assert out.count("SUCCESS") == len(UNIT_TESTS), out


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules("alert")}
    assert alerts - fired == set(), "alerts no unit test makes fire"
    assert alerts - quiet == set(), "alerts no unit test expects to stay quiet"


def test_every_recording_rule_has_a_unit_test() -> None:
    tested = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {check["expr"].split("{")[0] for check in case.get("promql_expr_test", [])}
    assert {rule["record"] for rule in rules("record")} - tested == set()


def test_every_alert_has_a_severity_and_a_runbook() -> None:
    for rule in rules("alert"):
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        notes = rule["annotations"]
        assert {"summary", "description", "runbook"} <= notes.keys(), rule["alert"]
        assert len(notes["runbook"]) > 100, rule["alert"]


def test_every_alert_is_in_the_operations_catalogue() -> None:
    catalogue = (ROOT / "docs" / "operations.md").read_text()
    for rule in rules("alert"):
        assert f"### {rule['alert']}" in catalogue, rule["alert"]
