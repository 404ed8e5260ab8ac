"""`driftguard diff` on a real API server: it reports exactly the objects the operator reports."""

from typing import Any

import pytest
import yaml
from envs import (
    Operator,
    apply,
    configmap,
    deployment,
    environment,
    resource_status,
    run_cli,
    wait_condition,
)
from helpers import Kubectl, wait_for

REPLICAS_1_TO_5 = [{"kind": "Deployment", "paths": ["/spec/replicas"], "minimum": 1, "maximum": 5}]


def start(
    kubectl: Kubectl, namespace: str, resources: list[dict[str, Any]], *, mode: str, **spec: Any
) -> None:
    """The Environment `app` in sync, in `mode`; Observe creates nothing, so Enforce goes first."""
    apply(kubectl, environment("app", namespace, resources, **spec))
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    if mode == "Observe":
        apply(kubectl, environment("app", namespace, resources, mode=mode, **spec))
        wait_condition(kubectl, "app", namespace, "Ready", "True", reason="Observing")


def wait_state(kubectl: Kubectl, namespace: str, kind: str, name: str, state: str) -> None:
    wait_for(
        lambda: resource_status(kubectl, "app", namespace, kind, name).get("state") == state,
        message=f"{kind}/{name} reported {state}",
    )


def apply_as_other(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> None:
    """A server-side apply by another field manager, taking over the fields it sets."""
    manifest = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
    argv = ["apply", "--server-side", "--force-conflicts", "--field-manager=other", "-f", "-"]
    kubectl(*argv, input=yaml.safe_dump(manifest))


@pytest.mark.parametrize("mode", ["Enforce", "Observe"])
def test_change_within_bounds_is_no_drift(
    mode: str, kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A scale within an allowedChanges bound is Overridden, and diff shows nothing and exits 0."""
    start(
        kubectl,
        namespace,
        [deployment("d", image="busybox")],
        mode=mode,
        allowedChanges=REPLICAS_1_TO_5,
    )
    kubectl("scale", "deploy/d", "-n", namespace, "--replicas=4")
    wait_state(kubectl, namespace, "Deployment", "d", "Overridden")

    done = run_cli(kubectl, "diff", "app", "-n", namespace)

    assert (done.returncode, done.stdout) == (0, ""), done.stderr


def test_change_out_of_bounds_in_observe_is_drift(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A scale beyond the bound is Drifted in Observe, and diff shows it and exits 1."""
    start(
        kubectl,
        namespace,
        [deployment("d", image="busybox")],
        mode="Observe",
        allowedChanges=REPLICAS_1_TO_5,
    )
    kubectl("scale", "deploy/d", "-n", namespace, "--replicas=9")
    wait_state(kubectl, namespace, "Deployment", "d", "Drifted")

    done = run_cli(kubectl, "diff", "app", "-n", namespace)

    assert done.returncode == 1, done.stderr
    assert "-  replicas: 9" in done.stdout
    assert "+  replicas: 2" in done.stdout
    # Observe judges without driftguard's labels, so the ones Enforce left are no difference.
    assert "driftguard.io/environment" not in done.stdout


def test_field_taken_back_with_the_same_value_in_observe_is_no_drift(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """In Observe, a field another manager set back to the blueprint's value is InSync; diff exits 0."""
    start(kubectl, namespace, [configmap("a", v="1")], mode="Observe")
    apply_as_other(kubectl, namespace, configmap("a", v="2"))
    wait_state(kubectl, namespace, "ConfigMap", "a", "Drifted")
    assert run_cli(kubectl, "diff", "app", "-n", namespace).returncode == 1
    apply_as_other(kubectl, namespace, configmap("a", v="1"))
    wait_state(kubectl, namespace, "ConfigMap", "a", "InSync")

    done = run_cli(kubectl, "diff", "app", "-n", namespace)

    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    # The field is the other manager's now, not driftguard's: the case diff must not call drift.
    live = kubectl.json("get", "cm", "a", "-n", namespace, "--show-managed-fields")
    ours = [e for e in live["metadata"]["managedFields"] if e["manager"] == "driftguard"]
    assert all("f:v" not in e["fieldsV1"].get("f:data", {}) for e in ours)


def test_deleted_object_in_observe_is_missing(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A deleted object is Missing in Observe, and diff shows all of it and exits 1."""
    start(kubectl, namespace, [configmap("a", v="1")], mode="Observe")
    kubectl("delete", "cm", "a", "-n", namespace)
    wait_state(kubectl, namespace, "ConfigMap", "a", "Missing")

    done = run_cli(kubectl, "diff", "app", "-n", namespace)

    assert done.returncode == 1, done.stderr
    assert f"+++ blueprint/ConfigMap/{namespace}/a" in done.stdout
    assert "+  v: '1'" in done.stdout
