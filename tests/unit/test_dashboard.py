"""The chart's Grafana dashboard and alert rules name only metrics the operator exports.

The exported names come from the prometheus_client registry once driftguard.telemetry.metrics is
imported, with the suffixes the exposition adds (_total, _bucket, _sum, _count).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from driftguard.telemetry import metrics

FILES = Path(__file__).resolve().parents[2] / "charts" / "driftguard" / "files"
NAME = re.compile(r"\bdriftguard_[a-zA-Z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# What a platform team asked to see on the wall, by the metric that shows it.
REQUIRED = {
    "environments in sync": "driftguard_environment_in_sync",
    "drifted objects per environment": "driftguard_drifted_resources",
    "reverts": "driftguard_drift_reverted_total",
    "revert latency quantiles": "driftguard_revert_latency_seconds_bucket",
    "reconcile errors": "driftguard_reconcile_errors_total",
    "watch health": "driftguard_watches",
}


def exported() -> set[str]:
    """Every sample name the operator's /metrics can carry for its own families."""
    assert metrics.watches is not None  # importing the module registered the collectors
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("driftguard_"):
            names.update(f"{family.name}{suffix}" for suffix in SUFFIXES[family.type])
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FILES / "dashboard.json").read_text())
    return loaded


def panel_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def variable_queries() -> list[tuple[str, str]]:
    return [
        (variable["name"], variable["query"]["query"])
        for variable in dashboard()["templating"]["list"]
        if variable["type"] == "query"
    ]


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((FILES / "alerts.yaml").read_text())
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def test_exported_names_include_the_suffixes() -> None:
    """The registry yields counters with _total and histograms with _bucket, as scraped."""
    names = exported()
    assert "driftguard_drift_reverted_total" in names
    assert "driftguard_revert_latency_seconds_bucket" in names
    assert "driftguard_drift_reverted" not in names


@pytest.mark.parametrize(
    ("where", "expr"),
    [*panel_expressions(), *variable_queries(), *alert_expressions()],
    ids=lambda value: str(value)[:40],
)
def test_expression_names_only_exported_metrics(where: str, expr: str) -> None:
    """Each dashboard query, variable query and alert names only exported metrics, and some."""
    named = set(NAME.findall(expr))
    # DriftguardOperatorDown alone reads Prometheus' own `up` of the operator's target.
    assert named or expr.startswith("absent(up{"), f"{where}: {expr} names no driftguard metric"
    assert named <= exported(), f"{where}: not exported: {sorted(named - exported())}"


def test_every_panel_has_a_query_and_a_unique_id() -> None:
    """Grafana needs distinct panel ids; a panel without a query would stay empty."""
    panels = dashboard()["panels"]
    assert all(panel.get("targets") for panel in panels)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))


def test_dashboard_shows_what_was_asked() -> None:
    """In sync, drift per environment, reverts, latency quantiles, errors and watch health."""
    used = {name for _, expr in panel_expressions() for name in NAME.findall(expr)}
    missing = {topic for topic, name in REQUIRED.items() if name not in used}
    assert missing == set()
    quantiles = [expr for _, expr in panel_expressions() if "revert_latency" in expr]
    assert all(expr.startswith("histogram_quantile(") for expr in quantiles)
    assert "driftguard_drifted_resources" in next(
        expr for title, expr in panel_expressions() if title == "Drifted objects per environment"
    )


def test_queries_use_the_datasource_variable() -> None:
    """Every panel and query reads the dashboard's ${datasource}, never a fixed uid."""
    panels = dashboard()["panels"]
    sources = [panel["datasource"] for panel in panels]
    sources += [target["datasource"] for panel in panels for target in panel["targets"]]
    assert {source["uid"] for source in sources} == {"${datasource}"}
