"""A status write of an Environment evaluates no CEL rule on the real API server.

The blueprint's CEL rules live in crds/' ValidatingAdmissionPolicy, which matches the main
resource and not `environments/status` (tests/unit/test_crdpolicy.py); the CRD's schema holds
none. The API server counts every CEL evaluation of a CRD's rules
(`apiserver_cel_evaluation_duration_seconds`); a policy's admitted checks are not counted
anywhere, so its side is the refusals of test_bad_input.py and the CPU of bench/statuswrite.py.
No operator runs here: the test writes status itself, as the operator does (a merge patch).
"""

import json

from envs import apply, configmap, environment, install_crd
from helpers import Kubectl
from prometheus_client.parser import text_string_to_metric_families


def _cel_evaluations(kubectl: Kubectl) -> float:
    """CEL evaluations of CRD schema rules so far (each schema node with rules counts one)."""
    text = kubectl("get", "--raw", "/metrics").stdout
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "apiserver_cel_evaluation_duration_seconds_count"
    )


def _status(step: int) -> str:
    state = "Drifted" if step % 2 else "InSync"
    entries = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": f"cm-{i}", "state": state}
        for i in range(20)
    ]
    return json.dumps({"status": {"resources": entries, "summary": {"managed": 20}}})


def test_status_writes_evaluate_no_cel_rule(kubectl: Kubectl, namespace: str) -> None:
    """Ten status writes of an Environment of 20 objects evaluate no CEL rule; a DriftException
    (its schema has rules) moves the same counter."""
    install_crd(kubectl)
    apply(kubectl, environment("cost", namespace, [configmap(f"cm-{i}", v="1") for i in range(20)]))
    before = _cel_evaluations(kubectl)
    for step in range(10):
        kubectl(
            *("patch", "environment", "cost", "-n", namespace, "--subresource=status"),
            *("--type=merge", "-p", _status(step)),
        )
    assert _cel_evaluations(kubectl) == before

    exception = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "DriftException",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "environmentRef": {"name": "cost"},
            "changes": [{"paths": ["/data/v"]}],
            "reason": "a probe of the CEL counter",
            "duration": "1h",
        },
    }
    kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(exception))
    assert _cel_evaluations(kubectl) > before, "CEL rules of a CRD schema are counted"
