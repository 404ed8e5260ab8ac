"""/metrics as the contract states it: promtool accepts it, every family has the contract's
type and labels, and the per-Environment gauges follow the Environment until it is gone.
"""

import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from envs import Operator, apply, environment, get, wait_condition
from helpers import Kubectl, cached_tool, wait_for
from prometheus_client.parser import text_string_to_metric_families

PROMTOOL_VERSION = "v0.316.0"  # hack/build-tools.sh builds this one
ENV = "app"
GAUGES = (
    "driftguard_managed_resources",
    "driftguard_drifted_resources",
    "driftguard_environment_in_sync",
)

# The contract's table: name -> (type, label names).
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "driftguard_managed_resources": ("gauge", {"namespace", "environment"}),
    "driftguard_drifted_resources": ("gauge", {"namespace", "environment"}),
    "driftguard_environment_in_sync": ("gauge", {"namespace", "environment"}),
    "driftguard_drift_detected_total": ("counter", {"namespace", "environment", "kind"}),
    "driftguard_drift_reverted_total": ("counter", {"namespace", "environment", "kind"}),
    "driftguard_revert_latency_seconds": ("histogram", {"kind"}),
    "driftguard_reconcile_duration_seconds": ("histogram", set()),
    "driftguard_reconcile_errors_total": ("counter", {"namespace", "environment", "reason"}),
}


@pytest.fixture(scope="session")
def promtool() -> Path:
    """The cached promtool; when it is missing the test skips, except under CI=true: it fails."""
    return cached_tool("promtool", PROMTOOL_VERSION, build_time="a few minutes")


def scrape(operator: Operator) -> str:
    """The raw text of the operator's /metrics."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
    return text


def series(operator: Operator, name: str, **labels: str) -> list[dict[str, str]]:
    """The label sets of every sample called ``name`` that carries these labels."""
    found = []
    for family in text_string_to_metric_families(scrape(operator)):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append(dict(sample.labels))
    return found


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def revert_one_drift(kubectl: Kubectl, operator: Operator, namespace: str) -> None:
    """An Environment in sync, one ConfigMap patched by hand, and the patch reverted."""
    apply(kubectl, environment(ENV, namespace, [configmap("web-config", DB_VERSION="5.7")]))
    wait_condition(kubectl, ENV, namespace, "InSync", "True")
    patch = '{"data":{"DB_VERSION":"5.6"}}'
    kubectl("patch", "cm", "web-config", "-n", namespace, "--type=merge", "-p", patch)
    labels = {"namespace": namespace, "environment": ENV, "kind": "ConfigMap"}
    wait_for(
        lambda: operator.metric("driftguard_drift_reverted_total", **labels) >= 1,
        message="driftguard_drift_reverted_total to count the revert",
    )
    data = (get(kubectl, "cm", "web-config", namespace) or {}).get("data")
    assert data == {"DB_VERSION": "5.7"}


def provoke_error(kubectl: Kubectl, operator: Operator, namespace: str) -> None:
    """An Environment whose blueprint names a kind the server does not serve: InvalidSpec."""
    unknown = {"apiVersion": "example.com/v1", "kind": "Nope", "metadata": {"name": "x"}}
    apply(kubectl, environment("broken", namespace, [unknown]))
    wait_condition(kubectl, "broken", namespace, "Ready", "False", reason="InvalidSpec")
    labels = {"namespace": namespace, "environment": "broken", "reason": "InvalidSpec"}
    wait_for(
        lambda: operator.metric("driftguard_reconcile_errors_total", **labels) >= 1,
        message="driftguard_reconcile_errors_total to count the InvalidSpec",
    )


def contract_problems(text: str) -> list[str]:
    """How /metrics differs from the contract's table: name, type, label names."""
    declared = {
        parts[2]: parts[3]
        for parts in (line.split() for line in text.splitlines())
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]
    }
    families = {family.name: family for family in text_string_to_metric_families(text)}
    problems = []
    for name, (type_, labels) in CONTRACT.items():
        if declared.get(name) != type_:
            problems.append(f"{name}: # TYPE says {declared.get(name)!r}, contract {type_!r}")
            continue
        # The parser names a counter's family without its _total suffix.
        family = families.get(name.removesuffix("_total") if type_ == "counter" else name)
        if family is None or family.type != type_:
            problems.append(f"{name}: the parser finds no {type_} family")
            continue
        if not family.samples:
            problems.append(f"{name}: no samples")
            continue
        for sample in family.samples:
            names = set(sample.labels) - ({"le"} if sample.name.endswith("_bucket") else set())
            if names != labels:
                problems.append(f"{sample.name}: labels {sorted(names)}, contract {sorted(labels)}")
    return problems


def test_promtool_check_metrics_passes(
    promtool: Path, kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """`promtool check metrics` accepts /metrics once drift has been detected and reverted."""
    revert_one_drift(kubectl, operator, namespace)
    provoke_error(kubectl, operator, namespace)
    text = scrape(operator)
    done = subprocess.run(
        [str(promtool), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = done.stdout + done.stderr
    assert [line for line in report.splitlines() if "driftguard_" in line] == []
    assert done.returncode == 0, f"promtool check metrics exited {done.returncode}:\n{report}"


def test_every_family_has_the_contract_type_and_labels(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """Each family of the contract's table: exact name, type and label names, no more."""
    revert_one_drift(kubectl, operator, namespace)
    provoke_error(kubectl, operator, namespace)
    assert contract_problems(scrape(operator)) == []


def test_gauges_follow_the_environment(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """managed = number of objects, in_sync 1 when in sync, 0 while drifted; gone with the env."""
    labels = {"namespace": namespace, "environment": ENV}
    objects = [configmap("a", v="1"), configmap("b", v="1"), service("web")]
    manifest = environment(ENV, namespace, objects)
    apply(kubectl, manifest)
    wait_condition(kubectl, ENV, namespace, "InSync", "True")

    def gauges() -> tuple[float, float, float]:
        return (
            operator.metric("driftguard_managed_resources", **labels),
            operator.metric("driftguard_drifted_resources", **labels),
            operator.metric("driftguard_environment_in_sync", **labels),
        )

    wait_for(lambda: gauges() == (3, 0, 1), message=f"gauges (3, 0, 1), last {gauges()}")

    manifest["spec"]["resources"] = objects[:2]
    manifest["spec"]["prune"] = True
    apply(kubectl, manifest)
    wait_for(lambda: gauges() == (2, 0, 1), message=f"gauges (2, 0, 1), last {gauges()}")

    # Observe: a manual change stays, so the Environment is drifted until it is undone.
    manifest["spec"]["mode"] = "Observe"
    apply(kubectl, manifest)
    wait_condition(kubectl, ENV, namespace, "Ready", "True", reason="Observing")
    kubectl("patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}')
    wait_condition(kubectl, ENV, namespace, "InSync", "False")
    wait_for(lambda: gauges() == (2, 1, 0), message=f"gauges (2, 1, 0), last {gauges()}")
    kubectl("patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"1"}}')
    wait_for(lambda: gauges() == (2, 0, 1), message=f"gauges (2, 0, 1), last {gauges()}")

    assert series(operator, "driftguard_drift_detected_total", **labels)
    kubectl("delete", "environment", ENV, "-n", namespace)
    gone = (*GAUGES, "driftguard_drift_detected_total")
    wait_for(
        lambda: not any(series(operator, name, **labels) for name in gone),
        message=f"the gauge and counter series of {namespace}/{ENV} to disappear",
    )
