"""What the chart ships for operations: the PrometheusRule, the Grafana dashboard, values.schema.json.

The PrometheusRule and the dashboard ConfigMap carry files/alerts.yaml and files/dashboard.json
as they are (one source); the schema makes `helm lint`, `helm template` and `helm install`
refuse a value of the wrong type or an unknown key, at any level.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import CHART, Helm, Kubectl

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
RULES = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def rule(groups: list[dict[str, Any]], alert: str) -> dict[str, Any]:
    (found,) = [r for group in groups for r in group["rules"] if r.get("alert") == alert]
    return dict(found)


# -- PrometheusRule and dashboard ---------------------------------------------------------


def test_prometheus_rule_is_the_plain_rules_file(helm: Helm) -> None:
    """prometheusRule.enabled renders one PrometheusRule whose groups are files/alerts.yaml."""
    (prometheus_rule,) = of_kind(
        helm.template({"prometheusRule": {"enabled": True}}), "PrometheusRule"
    )
    assert prometheus_rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert prometheus_rule["metadata"]["namespace"] == "ops"
    assert prometheus_rule["spec"]["groups"] == RULES["groups"]


def test_prometheus_rule_takes_the_job_and_labels(helm: Helm) -> None:
    """prometheusRule.job goes into DriftguardOperatorDown only; its labels onto the object."""
    values = {"prometheusRule": {"enabled": True, "job": "ops/dg", "labels": {"release": "kps"}}}
    (prometheus_rule,) = of_kind(helm.template(values), "PrometheusRule")
    assert prometheus_rule["metadata"]["labels"]["release"] == "kps"
    groups = prometheus_rule["spec"]["groups"]
    assert rule(groups, "DriftguardOperatorDown")["expr"] == 'absent(up{job="ops/dg"} == 1)'
    others = [
        r for group in groups for r in group["rules"] if r.get("alert") != "DriftguardOperatorDown"
    ]
    assert others == [
        r
        for group in RULES["groups"]
        for r in group["rules"]
        if r.get("alert") != "DriftguardOperatorDown"
    ]


def test_prometheus_rule_job_is_the_service_monitor_job(helm: Helm) -> None:
    """By default the rule looks for the job the ServiceMonitor gives the target (nameOverride too)."""
    values = {
        "nameOverride": "guard",
        "prometheusRule": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
    }
    objects = helm.template(values)
    (monitor,) = of_kind(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    (service,) = [
        s
        for s in of_kind(objects, "Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == "guard"
    (prometheus_rule,) = of_kind(objects, "PrometheusRule")
    expr = rule(prometheus_rule["spec"]["groups"], "DriftguardOperatorDown")["expr"]
    assert expr == f'absent(up{{job="{job}"}} == 1)'


def test_dashboard_configmap_carries_the_dashboard(helm: Helm) -> None:
    """grafanaDashboard.enabled renders a ConfigMap labelled for Grafana's sidecar, with the JSON."""
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "namespace": "monitoring",
            "annotations": {"grafana_folder": "driftguard"},
        }
    }
    (configmap,) = of_kind(helm.template(values), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "driftguard"}
    assert json.loads(configmap["data"]["driftguard.json"]) == DASHBOARD


def test_rule_and_dashboard_are_off_by_default(helm: Helm) -> None:
    """Without the toggles neither a PrometheusRule (CRD needed) nor a dashboard is rendered."""
    kinds = {
        obj["kind"] for obj in helm.template({"metrics": {"serviceMonitor": {"enabled": True}}})
    }
    assert "PrometheusRule" not in kinds
    assert "ConfigMap" not in kinds


# -- values.schema.json -------------------------------------------------------------------


def leaves(values: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths to every key of values.yaml (maps that are empty by default count as leaves)."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from leaves(value, (*path, key))
    else:
        yield path


def schema_at(path: tuple[str, ...]) -> dict[str, Any]:
    """The schema of a value: objects with properties must be closed; maps type their values."""
    node: dict[str, Any] = SCHEMA
    for key in path:
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{'.'.join(path)}: open at {key}"
            node = node["properties"][key]
        else:  # a map such as resources.limits: every value has the same schema
            node = node["additionalProperties"]
            assert isinstance(node, dict), f"{'.'.join(path)}: untyped map at {key}"
    return node


@pytest.mark.parametrize("path", list(leaves(VALUES)), ids=".".join)
def test_every_value_is_typed(path: tuple[str, ...]) -> None:
    """Each key of values.yaml has a schema with a type, under objects closed to unknown keys."""
    node = schema_at(path)
    assert "type" in node or "oneOf" in node, f"{'.'.join(path)} has no type"


def test_schema_allows_the_peering_values() -> None:
    """replicas and peering (enabled, name, clustered) are typed for the multi-replica chart."""
    assert schema_at(("replicas",))["type"] == "integer"
    peering = schema_at(("peering",))
    assert {key: value["type"] for key, value in peering["properties"].items()} == {
        "enabled": "boolean",
        "name": "string",
        "clustered": "boolean",
    }


BAD_VALUES = {
    "replicas-string": ({"replicas": "two"}, "/replicas"),
    "unknown-top-level-key": ({"replica": 1}, "additional properties 'replica'"),
    "port-as-string": ({"metrics": {"port": "8080"}}, "/metrics/port"),
    "misspelt-nested-key": (
        {"metrics": {"serviceMonitor": {"enabeld": True}}},
        "additional properties 'enabeld'",
    ),
    "toggle-as-string": ({"prometheusRule": {"enabled": "yes"}}, "/prometheusRule/enabled"),
    "unknown-log-level": ({"logLevel": "verbose"}, "/logLevel"),
    "rbac-entry-key": (
        {"rbac": {"managedResources": [{"apiGroups": [""], "resource": ["pods"]}]}},
        "/rbac/managedResources/0",
    ),
    "user-as-name": ({"securityContext": {"runAsUser": "root"}}, "/securityContext/runAsUser"),
    "dashboard-label-number": (
        {"grafanaDashboard": {"labels": {"team": 7}}},
        "/grafanaDashboard/labels/team",
    ),
}


@pytest.mark.parametrize(("values", "where"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_lint_and_template_refuse_bad_values(
    helm: Helm, values: dict[str, Any], where: str
) -> None:
    """`helm lint --strict` and `helm template` refuse the value, naming where it is wrong."""
    manifest = yaml.safe_dump(values)
    lint = helm("lint", "--strict", str(CHART), "-f", "-", input=manifest, check=False)
    assert lint.returncode != 0
    assert where in lint.stdout + lint.stderr
    template = helm("template", "dg", str(CHART), "-f", "-", input=manifest, check=False)
    assert template.returncode != 0
    assert "don't meet the specifications of the schema" in template.stderr
    assert where in template.stderr


def test_lint_accepts_every_documented_value(helm: Helm) -> None:
    """Every toggle and map set to a real value passes `helm lint --strict`."""
    values = {
        "peering": {"enabled": False, "name": "driftguard", "clustered": True},
        "prometheusRule": {"enabled": True, "job": "kube-system/driftguard", "labels": {"a": "b"}},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"c": "d"}},
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "1m30s"}},
        "resources": {"requests": {"cpu": 0.1, "memory": "100Mi"}, "limits": {"cpu": "500m"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops"}],
        "imagePullSecrets": [{"name": "registry"}],
    }
    helm("lint", "--strict", str(CHART), "-f", "-", input=yaml.safe_dump(values))


def test_install_refuses_bad_values(
    helm: Helm, kubectl: Kubectl, kubeconfig: Path, namespace: str
) -> None:
    """`helm install` into the local control plane refuses an unknown key and installs nothing."""
    name = f"dg-{namespace}"
    install = ("install", name, str(CHART), "-n", namespace, f"--kubeconfig={kubeconfig}")
    typo = {"metrics": {"serviceMonitor": {"enabeld": True}}}
    done = helm(*install, "--skip-crds", "-f", "-", input=yaml.safe_dump(typo), check=False)
    assert done.returncode != 0
    assert "additional properties 'enabeld' not allowed" in done.stderr
    assert helm("list", "-a", "-q", "-n", namespace, f"--kubeconfig={kubeconfig}").stdout == ""
    assert kubectl("get", "deployments,services", "-n", namespace, "-o", "name").stdout == ""
    # Spelt right, the install is accepted by the API server (dry run), and its notes say
    # where the dashboard went.
    right = {
        "metrics": {"serviceMonitor": {"enabled": False}},
        "grafanaDashboard": {"enabled": True},
    }
    done = helm(*install, "--skip-crds", "--dry-run=server", "-f", "-", input=yaml.safe_dump(right))
    assert f"Dashboard: ConfigMap {name}-driftguard-dashboard" in done.stdout
