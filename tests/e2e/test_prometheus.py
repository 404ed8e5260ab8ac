"""A real Prometheus scrapes the session's operator and evaluates the chart's alerts and dashboard.

Prometheus (built by hack/build-tools.sh from the module promtool comes from) runs on
loopback with a 1 s scrape and evaluation interval, the job name the rules expect
("driftguard"), and a copy of the chart's files/alerts.yaml whose `for:` are shortened,
generated from the real file so the rules under test are the shipped ones.
"""

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from envs import Operator, apply, configmap, environment, free_port, wait_condition
from helpers import CHART, Kubectl, cached_tool, wait_for

PROMETHEUS_VERSION = "v0.316.0"  # hack/build-tools.sh builds this one, as promtool
JOB = "driftguard"  # the job DriftguardOperatorDown looks for in the plain rules file
SHORT_FOR = "2s"
NAME = re.compile(r"\bdriftguard_[a-zA-Z0-9_]+")
# Dashboard variables as a user picking "All" would send them; Grafana's rate interval
# becomes a window holding several 1 s scrapes.
VARIABLES = {"$namespace": ".*", "$environment": ".*", "$__rate_interval": "1m"}
# After the scenario of the dashboard test these must have data, so the test cannot pass
# on an empty Prometheus.
MUST_HAVE_DATA = {
    "driftguard_environment_in_sync",
    "driftguard_managed_resources",
    "driftguard_drifted_resources",
    "driftguard_drift_reverted_total",
    "driftguard_revert_latency_seconds_bucket",
    "driftguard_watches",
    "driftguard_environment_info",
}


@dataclass
class Prometheus:
    url: str
    process: "subprocess.Popen[bytes]"
    log: Path

    def get(self, path: str, **params: str) -> Any:
        """The `data` of an HTTP API answer; fails unless Prometheus says success."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (a scalar answer fails the test)."""
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data}"
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The one sample an expression yields, or None while it yields none."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    def alerts(self, name: str, **labels: str) -> list[dict[str, Any]]:
        """Alerts of /api/v1/alerts (pending or firing) with this name and these labels."""
        return [
            alert
            for alert in self.get("/api/v1/alerts")["alerts"]
            if alert["labels"].get("alertname") == name
            and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]


def shortened_rules() -> dict[str, Any]:
    """The chart's rules file with every `for:` cut to SHORT_FOR, nothing else changed."""
    rules: dict[str, Any] = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    return rules


def is_ready(prometheus: Prometheus) -> bool:
    if prometheus.process.poll() is not None:
        log = prometheus.log.read_text(errors="replace")[-3000:]
        pytest.fail(f"prometheus exited {prometheus.process.returncode}:\n{log}")
    try:
        with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def prometheus(
    operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Prometheus on loopback scraping the session's operator, with the shortened rules."""
    binary = cached_tool("prometheus", PROMETHEUS_VERSION, build_time="a few minutes")
    home = tmp_path_factory.mktemp("prometheus")
    (home / "rules.yaml").write_text(yaml.safe_dump(shortened_rules()))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}],
            }
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    log = home / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address={address}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    handle = Prometheus(f"http://{address}", process, log)
    try:
        wait_for(lambda: is_ready(handle), timeout=60, message="prometheus /-/ready")
        wait_for(
            lambda: handle.value(f'up{{job="{JOB}"}}') == 1,
            timeout=30,
            message="the first scrape of the operator",
        )
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # Shown by pytest only when a test failed.
        print(f"--- prometheus log ---\n{log.read_text(errors='replace')[-5000:]}")


def test_rules_under_test_are_the_chart_rules_with_short_for() -> None:
    """The Prometheus copy differs from files/alerts.yaml in `for:` only."""
    real = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    short = shortened_rules()
    strip = [{k: v for k, v in r.items() if k != "for"} for g in real["groups"] for r in g["rules"]]
    assert [
        {k: v for k, v in r.items() if k != "for"} for g in short["groups"] for r in g["rules"]
    ] == strip
    assert {r.get("for") for g in short["groups"] for r in g["rules"]} <= {SHORT_FOR, None}


def test_drift_alert_fires_in_prometheus_and_resolves(
    kubectl: Kubectl, operator: Operator, prometheus: Prometheus, namespace: str
) -> None:
    """Observe-mode drift: gauges and counter through the HTTP API, the alert fires, then resolves."""
    labels = f'namespace="{namespace}", environment="shop"'
    # Observe reports on what exists: the object is made by hand, as it was before driftguard.
    kubectl("create", "configmap", "web-config", "-n", namespace, "--from-literal=DB_VERSION=5.7")
    apply(
        kubectl,
        environment("shop", namespace, [configmap("web-config", DB_VERSION="5.7")], mode="Observe"),
    )
    wait_condition(kubectl, "shop", namespace, "InSync", "True")
    wait_for(
        lambda: prometheus.value(f"driftguard_environment_in_sync{{{labels}}}") == 1,
        timeout=30,
        message="Prometheus to scrape in_sync 1",
    )
    assert prometheus.value(f"driftguard_managed_resources{{{labels}}}") == 1
    assert prometheus.alerts("DriftguardEnvironmentDrifted", namespace=namespace) == []

    patch = '{"data":{"DB_VERSION":"5.6"}}'
    kubectl("patch", "cm", "web-config", "-n", namespace, "--type=merge", "-p", patch)
    wait_for(
        lambda: prometheus.value(f"driftguard_drifted_resources{{{labels}}}") == 1,
        timeout=30,
        message="Prometheus to scrape drifted_resources 1",
    )
    assert prometheus.value(f"driftguard_environment_in_sync{{{labels}}}") == 0
    detected = f'sum(driftguard_drift_detected_total{{{labels}, kind="ConfigMap"}})'
    wait_for(lambda: (prometheus.value(detected) or 0) >= 1, timeout=30, message=detected)

    def firing() -> list[dict[str, Any]]:
        found = prometheus.alerts("DriftguardEnvironmentDrifted", namespace=namespace)
        return [alert for alert in found if alert["state"] == "firing"]

    (alert,) = wait_for(firing, timeout=60, message="DriftguardEnvironmentDrifted to fire")
    assert alert["labels"]["environment"] == "shop"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == (
        f"Environment {namespace}/shop has drifted from its blueprint"
    )
    assert f"kubectl driftguard diff shop -n {namespace}" in alert["annotations"]["runbook"]
    # The drift is flagged, not reverted: Observe never writes.
    assert kubectl.json("get", "cm", "web-config", "-n", namespace)["data"]["DB_VERSION"] == "5.6"

    patch = '{"data":{"DB_VERSION":"5.7"}}'
    kubectl("patch", "cm", "web-config", "-n", namespace, "--type=merge", "-p", patch)
    wait_for(
        lambda: prometheus.value(f"driftguard_drifted_resources{{{labels}}}") == 0,
        timeout=30,
        message="Prometheus to scrape drifted_resources 0",
    )
    wait_for(
        lambda: prometheus.alerts("DriftguardEnvironmentDrifted", namespace=namespace) == [],
        timeout=30,
        message="DriftguardEnvironmentDrifted to resolve",
    )
    assert prometheus.value(f"driftguard_environment_in_sync{{{labels}}}") == 1
    assert prometheus.alerts("DriftguardOperatorDown") == []


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL with the variables filled in) for every dashboard query."""
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def revert_once(kubectl: Kubectl, prometheus: Prometheus, namespace: str) -> None:
    """An Enforce Environment whose ConfigMap is patched and reverted, as Prometheus saw it."""
    apply(kubectl, environment("web", namespace, [configmap("web-config", DB_VERSION="5.7")]))
    wait_condition(kubectl, "web", namespace, "InSync", "True")
    patch = '{"data":{"DB_VERSION":"5.6"}}'
    kubectl("patch", "cm", "web-config", "-n", namespace, "--type=merge", "-p", patch)
    reverted = f'driftguard_drift_reverted_total{{namespace="{namespace}", environment="web"}}'
    # Two samples in the window: rate() and increase() over it then answer.
    wait_for(
        lambda: (prometheus.value(f"count_over_time({reverted}[1m])") or 0) >= 2,
        timeout=30,
        message="Prometheus to scrape the revert twice",
    )


def has_data(prometheus: Prometheus, name: str) -> bool:
    """A series of this name with two samples within the last minute exists."""
    return bool(prometheus.query(f'count_over_time({{__name__="{name}"}}[1m]) >= 2'))


def test_dashboard_queries_evaluate_in_prometheus(
    kubectl: Kubectl, operator: Operator, prometheus: Prometheus, namespace: str
) -> None:
    """Each panel's query runs without error, and answers wherever its metrics have data."""
    revert_once(kubectl, prometheus, namespace)
    names = {name: has_data(prometheus, name) for name in MUST_HAVE_DATA}
    assert names == dict.fromkeys(MUST_HAVE_DATA, True)
    empty = []
    for title, expr in dashboard_expressions():
        result = prometheus.query(expr)  # an invalid expression fails here
        named = set(NAME.findall(expr))
        if not result and all(has_data(prometheus, name) for name in named):
            empty.append(f"{title}: {expr}")
    assert empty == []
