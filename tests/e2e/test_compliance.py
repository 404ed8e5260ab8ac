"""Policy Reports on the session's operator, in the upstream formats policy tools read.

The CRDs are the upstream definitions (tests/e2e/crds/upstream). First only the Policy WG's
wgpolicyk8s.io PolicyReport is installed, and the operator writes that; then OpenReports is
installed too and new reports are OpenReports `Report`s. Both stay installed for the rest
of the session; the other modules do not look at them.
"""

from pathlib import Path
from typing import Any

from envs import (
    OPERATOR_USER,
    Operator,
    apply,
    configmap,
    deployment,
    environment,
    get,
    resource_status,
    stays,
    wait_condition,
)
from helpers import Kubectl, audit_events, wait_established, wait_for

UPSTREAM = Path(__file__).parent / "crds" / "upstream"
ENV = "shop"
REPORT = f"driftguard-{ENV}"


def install(kubectl: Kubectl, *crds: str) -> None:
    """Upstream CRDs by name, e.g. reports.openreports.io, from their upstream files."""
    for crd in crds:
        plural, group = crd.split(".", 1)
        kubectl("apply", "--server-side", "-f", str(UPSTREAM / f"{group}_{plural}.yaml"))
        wait_established(kubectl, crd)


def results(found: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The report's results by object name."""
    return {item["resources"][0]["name"]: item for item in (found or {}).get("results") or []}


def report_writes(operator: Operator, namespace: str, plural: str) -> int:
    """The operator's writes to the namespace's reports of one kind, as the audit log has them."""
    return sum(
        1
        for event in audit_events(operator.audit_log, username=OPERATOR_USER)
        if (event.get("objectRef") or {}).get("resource") == plural
        and (event.get("objectRef") or {}).get("namespace") == namespace
        and event.get("verb") in ("create", "patch", "update")
    )


def test_policy_report_follows_observed_drift_with_no_steady_writes(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """Only wgpolicyk8s.io served: a PolicyReport, pass then warn with paths and the tool;
    nothing is written while nothing changes."""
    install(kubectl, "policyreports.wgpolicyk8s.io")
    kubectl("create", "configmap", "db", "-n", namespace, "--from-literal=DB_VERSION=5.7")
    blueprint = [configmap("db", DB_VERSION="5.7")]
    apply(kubectl, environment(ENV, namespace, blueprint, mode="Observe"))
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync", timeout=60)

    def report() -> dict[str, Any] | None:
        return get(kubectl, "policyreports.wgpolicyk8s.io", REPORT, namespace)

    wait_for(lambda: results(report()).get("db", {}).get("result") == "pass", message="pass")
    found = report()
    assert found is not None
    assert found["summary"] == {"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    (owner,) = found["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Environment", ENV)

    kubectl("patch", "configmap", "db", "-n", namespace, "-p", '{"data":{"DB_VERSION":"5.6"}}')
    wait_for(lambda: results(report()).get("db", {}).get("result") == "warn", message="warn")
    drifted = results(report())["db"]
    assert drifted["policy"] == ENV
    assert drifted["source"] == "driftguard"
    assert drifted["properties"]["paths"] == "/data/DB_VERSION"
    assert drifted["properties"]["changedBy"] == "kubectl-patch"
    assert drifted["severity"] == "medium"
    assert "5.6" not in str(report())  # paths and people, never a value

    writes = report_writes(operator, namespace, "policyreports")
    assert writes >= 2  # made, then changed
    stays(
        lambda: report_writes(operator, namespace, "policyreports") == writes,
        seconds=5,
        message="no report writes while nothing changes",
    )
    assert get(kubectl, "reports.openreports.io", REPORT, namespace) is None


def test_openreports_is_preferred_once_installed_and_an_exception_is_skip(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """With OpenReports served, an Enforce Environment's report is a Report: pass for what
    matches, skip for drift a DriftException holds, back to pass once it is reverted."""
    install(kubectl, "reports.openreports.io", "policyreports.wgpolicyk8s.io")
    blueprint = [configmap("db", DB_VERSION="5.7"), deployment("web", replicas=2)]
    apply(kubectl, environment(ENV, namespace, blueprint))
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync", timeout=60)

    def report() -> dict[str, Any] | None:
        return get(kubectl, "reports.openreports.io", REPORT, namespace)

    wait_for(lambda: len(results(report())) == 2, message="an OpenReports Report")
    assert {item["result"] for item in results(report()).values()} == {"pass"}
    assert get(kubectl, "policyreports.wgpolicyk8s.io", REPORT, namespace) is None

    hold = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "DriftException",
        "metadata": {"name": "hold", "namespace": namespace},
        "spec": {
            "environmentRef": {"name": ENV},
            "changes": [{"kind": "Deployment", "name": "web", "paths": ["/spec/replicas"]}],
            "reason": "incident 4711: hold capacity",
            "duration": "1h",
        },
    }
    apply(kubectl, hold)
    wait_for(
        lambda: (
            ((get(kubectl, "driftexception", "hold", namespace) or {}).get("status") or {}).get(
                "phase"
            )
            == "Active"
        ),
        message="hold Active",
    )
    kubectl("scale", "deployment", "web", "-n", namespace, "--replicas=9")
    wait_for(
        lambda: (
            resource_status(kubectl, ENV, namespace, "Deployment", "web").get("state") == "Excepted"
        ),
        message="web Excepted",
    )
    wait_for(lambda: results(report()).get("web", {}).get("result") == "skip", message="skip")
    skipped = results(report())["web"]
    assert skipped["properties"]["exception"] == "hold"
    assert report()["summary"]["skip"] == 1  # type: ignore[index]

    kubectl("delete", "driftexception", "hold", "-n", namespace)
    wait_for(lambda: results(report()).get("web", {}).get("result") == "pass", message="pass")
