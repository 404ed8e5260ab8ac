"""Faults on the session's control plane that need no component killed or squeezed.

The target namespace deleted under a live Environment and created again; an Environment
deleted while its first apply is still running; an Environment of 3,000 objects and a
blueprint close to etcd's object limit. Each test prints what it measured.
"""

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from envs import (
    Operator,
    allow_impersonation,
    apply,
    configmap,
    environment,
    get,
    status,
    wait_condition,
)
from helpers import Kubectl, wait_for

# etcd refuses a value over 1.5 MiB (--max-request-bytes), the API server a request over 3 MiB.
ETCD_OBJECT_LIMIT = 1572864
RESYNC = "10m"  # far longer than any wait here: what happens, happens through watches


def labelled(kubectl: Kubectl, namespace: str, env: str, env_namespace: str) -> list[str]:
    """Names of the ConfigMaps in `namespace` carrying the Environment's labels."""
    selector = (
        f"driftguard.io/environment={env},driftguard.io/environment-namespace={env_namespace}"
    )
    done = kubectl("get", "cm", "-n", namespace, "-l", selector, "-o", "name", check=False)
    return done.stdout.split()


def apply_server_side(kubectl: Kubectl, manifest: dict[str, Any], *, check: bool = True) -> Any:
    """`kubectl apply --server-side`: a client-side apply keeps the whole object in an
    annotation, which refuses anything over 256 KiB before size limits are reached."""
    argv = ("apply", "--server-side", "-f", "-")
    return kubectl(*argv, input=yaml.safe_dump(manifest), check=check)


def configmaps(count: int, prefix: str = "c") -> list[dict[str, Any]]:
    return [configmap(f"{prefix}-{i:04d}", v=str(i)) for i in range(count)]


@pytest.fixture
def target(kubectl: Kubectl) -> Iterator[str]:
    """A second namespace for an Environment's objects, deleted after the test."""
    name = f"t-{secrets.token_hex(4)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def deployer(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A ServiceAccount in the test's namespace that may write ConfigMaps anywhere.

    Granted cluster-wide on purpose: a RoleBinding in the target namespace would be
    deleted with it, and the test is about the namespace coming back, not RBAC.
    """
    name = f"deployer-{namespace}"
    kubectl("create", "serviceaccount", "deployer", "-n", namespace)
    allow_impersonation(kubectl, namespace)
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]
    role: dict[str, Any] = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole"}
    role |= {"metadata": {"name": name}, "rules": rules}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": namespace}],
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    yield "deployer"
    kubectl("delete", "clusterrolebinding,clusterrole", name, "--wait=false", check=False)


def test_target_namespace_deleted_then_recreated(
    kubectl: Kubectl, operator: Operator, namespace: str, target: str, deployer: str
) -> None:
    """While the target namespace is gone the Environment says so (Ready=False,
    NamespaceMissing, naming it); created again, everything is applied within seconds,
    without a restart and long before the resync."""
    manifest = environment(
        "app",
        namespace,
        configmaps(3),
        targetNamespace=target,
        serviceAccountName=deployer,
        resyncInterval=RESYNC,
    )
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "InSync", "True", timeout=30)

    kubectl("delete", "namespace", target, "--wait=true", timeout=90)
    ready = wait_condition(kubectl, "app", namespace, "Ready", "False", reason="NamespaceMissing")
    assert target in ready["message"]
    in_sync = wait_condition(kubectl, "app", namespace, "InSync", "False")
    assert target in in_sync["message"]
    assert kubectl("get", "namespace", target, check=False).returncode != 0

    kubectl("create", "namespace", target)
    began = time.monotonic()
    wait_for(
        lambda: len(labelled(kubectl, target, "app", namespace)) == 3,
        timeout=30,
        interval=0.1,
        message=f"the 3 ConfigMaps applied again in {target}",
    )
    applied = time.monotonic() - began
    wait_condition(kubectl, "app", namespace, "InSync", "True", reason="InSync", timeout=20)
    wait_condition(kubectl, "app", namespace, "Ready", "True", timeout=5)
    synced = time.monotonic() - began
    assert (get(kubectl, "cm", "c-0002", target) or {}).get("data") == {"v": "2"}
    print(f"\nnamespace re-created: objects back in {applied:.2f}s, InSync in {synced:.2f}s")


@pytest.mark.parametrize(
    ("policy", "left"), [("Delete", 0), ("Orphan", 200)], ids=["delete", "orphan"]
)
def test_environment_deleted_while_being_applied(
    kubectl: Kubectl, operator: Operator, namespace: str, policy: str, left: int
) -> None:
    """An Environment of 200 ConfigMaps deleted right after creation: with Delete nothing
    labelled is left once the operator is done, with Orphan nothing is deleted."""
    manifest = environment("big", namespace, configmaps(200), deletionPolicy=policy)
    apply(kubectl, manifest)
    wait_for(
        lambda: labelled(kubectl, namespace, "big", namespace),
        timeout=30,
        interval=0.02,
        message="the first ConfigMap applied",
    )
    began = time.monotonic()
    kubectl("delete", "environment", "big", "-n", namespace, "--wait=true", timeout=90)
    deleted = time.monotonic() - began
    # The apply under way may still be writing: wait until the operator has been quiet.
    settled = quiet_writes(operator, namespace, seconds=3.0)

    remaining = labelled(kubectl, namespace, "big", namespace)
    if policy == "Orphan":
        # The pass under way finishes its writes; what exists then is never deleted.
        assert remaining, "Orphan deleted the objects"
        deletes = [e for e in operator.writes(namespace) if e["verb"] == "delete"]
        assert deletes == []
    else:
        assert remaining == []
    print(
        f"\n{policy}: Environment gone {deleted:.2f}s after the delete, operator quiet"
        f" {settled:.2f}s later; {len(remaining)} labelled ConfigMaps left (at most {left})"
    )


def quiet_writes(operator: Operator, namespace: str, *, seconds: float) -> float:
    """Waits until the operator has written nothing to `namespace` for `seconds`; how long."""
    began = time.monotonic()

    def is_quiet() -> bool:
        writes = operator.writes(namespace)
        if not writes:
            return time.monotonic() - began > seconds
        last = max(event["stageTimestamp"] for event in writes)
        return bool(time.time() - _epoch(last) > seconds)

    wait_for(is_quiet, timeout=60, interval=0.5, message="the operator done writing")
    return time.monotonic() - began


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_status_of_3000_objects_stays_small(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """An Environment of 3,000 ConfigMaps converges and its status stays far under etcd's
    1.5 MiB object limit: 500 entries listed, the rest counted in resourcesOmitted."""
    apply_server_side(kubectl, environment("huge", namespace, configmaps(3000)))
    began = time.monotonic()
    wait_condition(kubectl, "huge", namespace, "InSync", "True", reason="InSync", timeout=150)
    converged = time.monotonic() - began

    found = status(kubectl, "huge", namespace)
    size = len(json.dumps(found, separators=(",", ":")).encode())
    whole = get(kubectl, "environment", "huge", namespace) or {}
    total = len(json.dumps(whole, separators=(",", ":")).encode())
    assert found["summary"]["managed"] == 3000
    assert len(found["resources"]) == 500
    assert found["resourcesOmitted"] == 2500
    assert size < ETCD_OBJECT_LIMIT / 10, size
    print(
        f"\n3,000 ConfigMaps: InSync in {converged:.1f}s; status {size / 1024:.0f} KiB,"
        f" whole Environment {total / 1024:.0f} KiB (etcd limit 1,536 KiB)"
    )
    kubectl("delete", "environment", "huge", "-n", namespace, "--wait=false")


@pytest.mark.parametrize("count", [14, 15, 16], ids=["1400KiB", "1500KiB", "1600KiB"])
def test_blueprint_near_the_size_limit_is_whole_or_refused(
    kubectl: Kubectl, operator: Operator, namespace: str, count: int
) -> None:
    """A blueprint of 1.4 to 1.6 MiB is either refused at `kubectl apply` with a message
    naming the limit, or applied whole; never half-applied."""
    # ConfigMaps of 100 KiB each: each fits an object, together close to etcd's limit.
    chunk = "x" * (100 * 1024)
    manifest = environment(
        "heavy", namespace, [configmap(f"h-{i:02d}", v=chunk) for i in range(count)]
    )
    size = len(json.dumps(manifest).encode())

    done = apply_server_side(kubectl, manifest, check=False)

    if done.returncode != 0:
        assert "too large" in done.stderr.lower() or "limit" in done.stderr.lower(), done.stderr
        assert get(kubectl, "environment", "heavy", namespace) is None
        assert labelled(kubectl, namespace, "heavy", namespace) == []
        print(f"\n{size / 1024:.0f} KiB blueprint refused: {done.stderr.strip()[:200]}")
        return
    ready = wait_for(
        lambda: _ready_settled(kubectl, "heavy", namespace), timeout=60, message="Ready settled"
    )
    found = labelled(kubectl, namespace, "heavy", namespace)
    if ready["status"] == "True":
        assert len(found) == count
        wait_condition(kubectl, "heavy", namespace, "InSync", "True", timeout=30)
    else:
        assert found == [], f"half-applied: {len(found)} of {count}"
        assert ready["message"]
    print(
        f"\n{size / 1024:.0f} KiB blueprint accepted: Ready={ready['status']}"
        f" ({ready.get('reason')}), {len(found)} of {count} applied; {ready.get('message', '')[:200]}"
    )
    kubectl("delete", "environment", "heavy", "-n", namespace, "--wait=false")


def _ready_settled(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    for entry in status(kubectl, name, namespace).get("conditions") or []:
        if entry.get("type") == "Ready" and entry.get("reason") not in (None, "Pending"):
            return dict(entry)
    return None
