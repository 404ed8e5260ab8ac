"""The operator under test and helpers to drive Environments through real kubectl.

One operator process per session (`driftguard run`, a subprocess, watching every
namespace) acting as the Helm chart's own ServiceAccount, with exactly the RBAC the
chart renders (never system:masters), so the tests prove the chart's grant suffices
and the audit log can count the operator's writes. No tenancy flags: the strict default.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import Helm, Kubectl, audit_events, wait_established, wait_for
from prometheus_client.parser import text_string_to_metric_families

from driftguard.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
# The chart rendered with fullnameOverride names the ServiceAccount and its ClusterRole(Binding).
OPERATOR_NAMESPACE = "driftguard-system"
OPERATOR_SERVICEACCOUNT = "driftguard-e2e"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICEACCOUNT}"
# rbac.managedResources: every kind the e2e blueprints manage. The chart's default list,
# plus the custom resources of test_lifecycle.py (Widget) and test_reliability.py (Gadget);
# Secrets (several modules' blueprints hold one) by the opt-in, rbac.manageSecrets.
MANAGED_RESOURCES = [
    {"apiGroups": [""], "resources": ["configmaps", "services", "serviceaccounts"]},
    {"apiGroups": ["apps"], "resources": ["deployments"]},
    {"apiGroups": ["example.com"], "resources": ["widgets", "gadgets"]},
]
# tenancy.serviceAccounts: the names the e2e Environments act as. Watching every namespace,
# the chart binds their impersonation nowhere: a test grants it in its tenant's namespace
# (`allow_impersonation`), as a platform team does when it makes the tenant's ServiceAccount.
TENANT_SERVICEACCOUNTS = ["tenant", "deployer"]
IMPERSONATOR_ROLE = f"{OPERATOR_SERVICEACCOUNT}-impersonate"
IDENTITY_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
WRITES = {"create", "update", "patch", "delete"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operator:
    """A `driftguard run` process; it can be stopped and started again, as in a rollout."""

    def __init__(
        self,
        kubeconfig: Path,
        log: Path,
        audit_log: Path,
        *,
        extra_args: Sequence[str] = (),
        scope: Sequence[str] = ("--all-namespaces",),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.extra_args = list(extra_args)
        self.scope = list(scope)
        self.metrics_port = free_port()
        self.log = log
        self.audit_log = audit_log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = Path(sys.executable).parent / "driftguard"
        # Plain /metrics: the tests read it directly (test_metrics_auth.py tests the secure one).
        argv = [str(binary), "run", *self.scope, "--metrics-port", str(self.metrics_port)]
        argv += ["--metrics-insecure"]
        argv += self.extra_args
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            )
        wait_for(lambda: _metrics_up(self), timeout=30, message="the operator's /metrics endpoint")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def writes(self, namespace: str, *, status: bool = False) -> list[dict[str, Any]]:
        """The operator's writes to objects in a namespace (Events aside), or to status."""
        found = []
        for event in audit_events(self.audit_log, username=OPERATOR_USER):
            ref = event.get("objectRef") or {}
            if event.get("verb") not in WRITES or ref.get("namespace") != namespace:
                continue
            if ref.get("resource") in ("events", "controllerrevisions", *REPORTS):
                continue  # an Event, the Environment's history or report: not a managed object
            if str(ref.get("name", "")).endswith("-drift-audit"):
                continue  # the audit trail
            if (ref.get("resource") == "environments") != status:
                continue
            if "dryRun" in (event.get("requestURI") or ""):
                continue
            found.append(event)
        return found

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


REPORTS = ("reports", "policyreports")
"""The Policy Reports' resources (test_compliance installs their CRDs)."""


def install_crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    wait_established(kubectl, "environments.driftguard.io")
    # Right after a CRD is created, lists can answer 429 "storage is (re)initializing".
    wait_for(
        lambda: kubectl("get", "environments", "-A", check=False).returncode == 0,
        timeout=30,
        message="the Environment API to serve lists",
    )
    wait_policy_active(kubectl)


# Valid for the schema, refused only by crds/' admission policy (its resync is under 10 s).
_POLICY_PROBE = {
    "apiVersion": "driftguard.io/v1alpha1",
    "kind": "Environment",
    "metadata": {"name": "policy-probe", "namespace": "default"},
    "spec": {"resyncInterval": "1s"},
}


def wait_policy_active(kubectl: Kubectl) -> None:
    """Waits until the API server enforces crds/' ValidatingAdmissionPolicy (a second or two
    after it is created): a server-side dry run of an Environment only it refuses."""

    def is_refused() -> bool:
        done = kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(_POLICY_PROBE), check=False
        )
        return done.returncode != 0 and "resyncInterval must be at least" in done.stderr

    wait_for(is_refused, timeout=30, interval=0.2, message="the Environment admission policy")


@pytest.fixture(scope="session")
def chart_rbac(helm: Helm) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, ClusterRole and ClusterRoleBinding, rendered once a session."""
    values = {
        "fullnameOverride": OPERATOR_SERVICEACCOUNT,
        "rbac": {"managedResources": MANAGED_RESOURCES, "manageSecrets": True},
        "tenancy": {"serviceAccounts": TENANT_SERVICEACCOUNTS},
    }
    objects = helm.template(values, namespace=OPERATOR_NAMESPACE)
    found = [obj for obj in objects if obj["kind"] in IDENTITY_KINDS]
    # The operator's own, and with secure metrics the review rights and the scrapers' role.
    assert {obj["kind"] for obj in found} == IDENTITY_KINDS, found
    assert IMPERSONATOR_ROLE in {obj["metadata"]["name"] for obj in found}, found
    return found


def allow_impersonation(admin: Kubectl, namespace: str) -> None:
    """Binds the chart's impersonation ClusterRole to the operator in one tenant namespace.

    What a platform team does beside each tenant's ServiceAccount (docs/security.md): the
    operator may then act as the names of tenancy.serviceAccounts there, and nowhere else.
    """
    admin(
        *("create", "rolebinding", IMPERSONATOR_ROLE, "-n", namespace),
        f"--clusterrole={IMPERSONATOR_ROLE}",
        f"--serviceaccount={OPERATOR_NAMESPACE}:{OPERATOR_SERVICEACCOUNT}",
    )


def chart_kubeconfig(plane: ControlPlane, admin: Kubectl, chart_rbac: list[dict[str, Any]]) -> Path:
    """Applies the chart's RBAC on a control plane; a kubeconfig with its ServiceAccount's token."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    admin("apply", "-f", "-", input=yaml.safe_dump_all([namespace, *chart_rbac]))
    kubeconfig = plane.serviceaccount_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_SERVICEACCOUNT)

    def is_granted() -> bool:
        argv = ("auth", "can-i", "watch", "environments.driftguard.io", "--all-namespaces")
        return admin(*argv, kubeconfig=kubeconfig, check=False).stdout.strip() == "yes"

    # The RBAC authorizer learns of a new binding through its informers: a short wait.
    wait_for(is_granted, timeout=30, message="the chart's ClusterRoleBinding to take effect")
    return kubeconfig


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    chart_rbac: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """`driftguard run` against the control plane, as the chart's ServiceAccount."""
    install_crd(kubectl)
    kubeconfig = chart_kubeconfig(control_plane, kubectl, chart_rbac)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    handle = Operator(kubeconfig, log, control_plane.audit_log)
    try:
        handle.start()
        yield handle
    finally:
        handle.stop()


def _metrics_up(handle: Operator) -> bool:
    process = handle.process
    assert process is not None, "the operator was not started"
    if process.poll() is not None:
        pytest.fail(f"the operator exited {process.returncode}:\n{handle.log_text()[-3000:]}")
    try:
        handle.metric("driftguard_reconcile_duration_seconds_count")
    except OSError:
        return False
    return True


def environment(
    name: str,
    namespace: str,
    resources: list[dict[str, Any]],
    *,
    mode: str = "Enforce",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"mode": mode, "resources": resources, **spec},
    }


def apply(kubectl: Kubectl, manifest: dict[str, Any], *, check: bool = True) -> Any:
    return kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)


def get(kubectl: Kubectl, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    done = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def status(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    env = get(kubectl, "environment", name, namespace) or {}
    result: dict[str, Any] = env.get("status") or {}
    return result


def condition(kubectl: Kubectl, name: str, namespace: str, type_: str) -> dict[str, Any]:
    for entry in status(kubectl, name, namespace).get("conditions") or []:
        if entry.get("type") == type_:
            return dict(entry)
    return {}


def wait_condition(
    kubectl: Kubectl,
    name: str,
    namespace: str,
    type_: str,
    value: str,
    *,
    reason: str | None = None,
    timeout: float = 20,
) -> dict[str, Any]:
    """The one helper that waits for an Environment condition to hold."""

    def holds() -> dict[str, Any] | None:
        found = condition(kubectl, name, namespace, type_)
        if found.get("status") == value and (reason is None or found.get("reason") == reason):
            return found
        return None

    result: dict[str, Any] = wait_for(
        holds, timeout=timeout, message=f"{type_}={value} ({reason}) on {namespace}/{name}"
    )
    return result


def resource_status(
    kubectl: Kubectl, name: str, namespace: str, kind: str, obj: str
) -> dict[str, Any]:
    for entry in status(kubectl, name, namespace).get("resources") or []:
        if entry.get("kind") == kind and entry.get("name") == obj:
            return dict(entry)
    return {}


def events(kubectl: Kubectl, namespace: str, reason: str) -> list[str]:
    listing = kubectl.json("get", "events", "-n", namespace, "--field-selector", f"reason={reason}")
    return [item.get("message", "") for item in listing.get("items", [])]


def stays(predicate: Any, *, seconds: float, message: str) -> None:
    """Fails if the predicate stops holding at any poll during a quiet period."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), message
        time.sleep(0.1)


def configmap(name: str, **data: str) -> dict[str, Any]:
    """A ConfigMap manifest for a blueprint."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def deployment(
    name: str = "web", *, image: str = "nginx:1.27.3", replicas: int = 2
) -> dict[str, Any]:
    """A Deployment manifest for a blueprint (its Pods stay Pending: there is no kubelet)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        },
    }


def custom_crd(kind: str, plural: str, group: str = "example.com") -> dict[str, Any]:
    """A namespaced CRD with an integer spec.size, for blueprints of custom kinds."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def run_cli(kubectl: Kubectl, *args: str) -> "subprocess.CompletedProcess[str]":
    """Runs the `driftguard` command line against the kubectl's cluster."""
    binary = Path(sys.executable).parent / "driftguard"
    return subprocess.run(
        [str(binary), "--kubeconfig", str(kubectl.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
