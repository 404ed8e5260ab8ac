"""hack/render-dashboard.py reads every panel and query of the chart's dashboard.

The script draws docs/dashboard.png from Prometheus' answers to these queries; a panel or
query it missed would silently leave the image, a variable it did not fill would make
Prometheus refuse the query.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_dashboard", ROOT / "hack" / "render-dashboard.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


script = load_script()


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (ROOT / "charts" / "driftguard" / "files" / "dashboard.json").read_text()
    )
    return loaded


def test_every_panel_and_query_is_extracted() -> None:
    """Each panel of dashboard.json, with its title, type and every target's legend, in order."""
    expected = [
        (
            panel["id"],
            panel["title"],
            panel["type"],
            [t.get("legendFormat", "") for t in panel["targets"]],
        )
        for panel in dashboard()["panels"]
    ]
    found = [
        (panel.id, panel.title, panel.type, [t.legend for t in panel.targets])
        for panel in script.panels(dashboard())
    ]
    assert found == expected
    assert all(panel.targets for panel in script.panels(dashboard()))


def test_every_variable_is_filled_in() -> None:
    """No $variable is left in any query sent to Prometheus, though the dashboard has some."""
    raw = [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]
    sent = [t.expr for panel in script.panels(dashboard()) for t in panel.targets]
    assert [expr for expr in raw if "$" in expr] != []
    assert [expr for expr in sent if "$" in expr] == []


def test_every_panel_type_can_be_drawn() -> None:
    """The script draws each panel type the dashboard uses (stat, table, timeseries)."""
    assert {panel["type"] for panel in dashboard()["panels"]} <= script.DRAWN


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('x{a=~"$namespace"}', 'x{a=~".*"}'),
        ('x{a=~"${namespace}"}', 'x{a=~".*"}'),
        ("rate(x[$__rate_interval])", "rate(x[30s])"),
        ('x{a=~"$unknown"}', 'x{a=~"$unknown"}'),
    ],
    ids=["plain", "braced", "rate-interval", "unknown-left-for-the-test-above"],
)
def test_substitute(expr: str, expected: str) -> None:
    """Both $name and ${name} are replaced; an unknown variable stays visible."""
    values = {"namespace": ".*", "__rate_interval": "30s"}
    assert script.substitute(expr, values) == expected
