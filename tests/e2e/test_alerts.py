"""The alert rules as Prometheus reads them: `promtool check rules` and `promtool test rules`.

The rules file is the chart's files/alerts.yaml (the PrometheusRule renders the same file);
the unit tests for each alert, firing and not, are tests/prometheus/alerts_test.yaml.
No control plane: promtool evaluates the rules on the series the tests declare.
"""

import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import CHART, ROOT, cached_tool

PROMTOOL_VERSION = "v0.316.0"  # hack/build-tools.sh builds this one
RULES = CHART / "files" / "alerts.yaml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yaml"
SLO_TESTS = ROOT / "tests" / "prometheus" / "slo_test.yaml"
# The contract's names.
ALERTS = {
    "DriftguardEnvironmentDrifted",
    "DriftguardRevertsFrequent",
    "DriftguardEnvironmentFighting",
    "DriftguardEnvironmentNotReady",
    "DriftguardWatchDown",
    "DriftguardOperatorDown",
    "DriftguardExceptionExpiring",
    "DriftguardClusterUnreachable",
}
RECORDS = {"environment:driftguard_in_sync:ratio_30d"}


@pytest.fixture(scope="module")
def promtool() -> Path:
    """The cached promtool; when it is missing the test skips, except under CI=true: it fails."""
    return cached_tool("promtool", PROMTOOL_VERSION, build_time="a few minutes")


def run(promtool: Path, *args: str) -> str:
    done = subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=120, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}:\n{report}"
    return report


def rules() -> list[dict[str, str]]:
    """The alerting rules (the recording rules aside)."""
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


def records() -> set[str]:
    loaded = yaml.safe_load(RULES.read_text())
    return {
        rule["record"] for group in loaded["groups"] for rule in group["rules"] if "record" in rule
    }


def test_promtool_check_rules_passes(promtool: Path) -> None:
    """`promtool check rules` accepts the rules file and finds the alerts and the SLO record."""
    found = f"SUCCESS: {len(ALERTS) + len(RECORDS)} rules found"
    assert found in run(promtool, "check", "rules", str(RULES))


def test_rules_are_the_contract_alerts_with_annotations() -> None:
    """Exactly the contract's alerts, each with a severity, summary, description and runbook."""
    assert {rule["alert"] for rule in rules()} == ALERTS
    assert records() == RECORDS
    for rule in rules():
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    """The promtool tests expect each alert both firing and not firing at least once."""
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == ALERTS
    assert quiet == ALERTS


def test_the_slo_record_is_unit_tested() -> None:
    """promtool evaluates the recording rule on series whose ratio is known."""
    tested = {
        case["expr"]
        for path in (RULE_TESTS, SLO_TESTS)
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert tested >= RECORDS


def test_promtool_test_rules_passes(promtool: Path) -> None:
    """`promtool test rules` passes every firing and not-firing case of every alert, and the
    SLO record's cases."""
    out = run(promtool, "test", "rules", str(RULE_TESTS), str(SLO_TESTS))
    assert out.count("SUCCESS") == 2, out
