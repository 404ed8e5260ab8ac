"""The drift table: each manual change, made with real kubectl, in Enforce and in Observe.

For each: drift is detected, status names the paths and the field manager, an
Event is posted, the counters move, the object is reverted (Enforce) or left as
it is (Observe), and afterwards the operator makes no further writes.
"""

import json
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from envs import (
    OPERATOR_USER,
    Operator,
    apply,
    configmap,
    environment,
    events,
    get,
    resource_status,
    status,
    stays,
    wait_condition,
)
from helpers import Kubectl, wait_for

from driftguard.runtime.subscriptions import NAMED_WATCHES

ENV = "app"


def blueprint() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web-config"},
            "data": {"DB_VERSION": "5.7", "LOG_LEVEL": "info"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "frontend"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "nginx:1.27.3",
                                "env": [{"name": "DB_VERSION", "value": "5.7"}],
                                "ports": [{"containerPort": 8080}],
                                "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}},
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    ]


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"]["containers"][0])


Action = Callable[[Kubectl, str], None]


def run(*args: str) -> Action:
    def act(kubectl: Kubectl, namespace: str) -> None:
        kubectl(*args, "-n", namespace)

    return act


def edit_env_var(kubectl: Kubectl, namespace: str) -> None:
    """`kubectl edit` with an editor that changes the env var, as a person would by hand."""
    env = {**os.environ, "KUBE_EDITOR": 'sed -i -e \'s/"5.7"/"5.6"/\''}
    argv = [str(kubectl.binary), f"--kubeconfig={kubectl.kubeconfig}", "edit", "deploy/web"]
    subprocess.run([*argv, "-n", namespace], env=env, check=True, capture_output=True)


def server_side_apply(kubectl: Kubectl, namespace: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-config", "namespace": namespace},
        "data": {"DB_VERSION": "9.0"},
    }
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=intruder",
        "-f",
        "-",
        input=yaml.safe_dump(manifest),
    )


def json_patch(kind: str, ops: str) -> Action:
    return run("patch", kind, "--type=json", "-p", ops)


@dataclass(frozen=True)
class Case:
    """One manual change. `manager` is None where managedFields cannot name anyone:
    a removed field or a deleted object is owned by no manager afterwards."""

    id: str
    action: Action
    kind: str
    name: str
    path: str
    manager: str | None
    is_blueprint: Callable[[dict[str, Any] | None], bool]
    allowed: list[dict[str, Any]] = field(default_factory=list)


def replicas(value: int) -> Callable[[dict[str, Any] | None], bool]:
    return lambda obj: obj is not None and obj["spec"]["replicas"] == value


CASES = [
    Case("scale", run("scale", "deploy/web", "--replicas=7"), "Deployment", "web",
         "/spec/replicas", "kubectl", replicas(2)),
    Case("set-image", run("set", "image", "deploy/web", "web=nginx:1.25"), "Deployment", "web",
         "/spec/template/spec/containers/0/image", "kubectl-set",
         lambda o: o is not None and container(o)["image"] == "nginx:1.27.3"),
    Case("edit-env-var", edit_env_var, "Deployment", "web",
         "/spec/template/spec/containers/0/env/0/value", "kubectl-edit",
         lambda o: o is not None and container(o)["env"] == [{"name": "DB_VERSION", "value": "5.7"}]),
    Case("patch-merge", run("patch", "cm/web-config", "--type=merge", "-p", '{"data":{"DB_VERSION":"5.6"}}'),
         "ConfigMap", "web-config", "/data/DB_VERSION", "kubectl-patch",
         lambda o: o is not None and o["data"]["DB_VERSION"] == "5.7"),
    Case("patch-json", json_patch("cm/web-config", '[{"op":"replace","path":"/data/LOG_LEVEL","value":"debug"}]'),
         "ConfigMap", "web-config", "/data/LOG_LEVEL", "kubectl-patch",
         lambda o: o is not None and o["data"]["LOG_LEVEL"] == "info"),
    Case("patch-strategic",
         run("patch", "deploy/web", "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.0"}]}}}}'),
         "Deployment", "web", "/spec/template/spec/containers/0/image", "kubectl-patch",
         lambda o: o is not None and container(o)["image"] == "nginx:1.27.3"),
    Case("label", run("label", "deploy/web", "tier=backend", "--overwrite"), "Deployment", "web",
         "/metadata/labels/tier", "kubectl-label",
         lambda o: o is not None and o["metadata"]["labels"]["tier"] == "frontend"),
    Case("remove-field", json_patch("cm/web-config", '[{"op":"remove","path":"/data/LOG_LEVEL"}]'),
         "ConfigMap", "web-config", "/data/LOG_LEVEL", None,
         lambda o: o is not None and o["data"].get("LOG_LEVEL") == "info"),
    Case("add-container",
         json_patch("deploy/web", '[{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"sidecar","image":"busybox"}}]'),
         "Deployment", "web", "/spec/template/spec/containers/1", "kubectl-patch",
         lambda o: o is not None and len(o["spec"]["template"]["spec"]["containers"]) == 1),
    Case("add-port",
         json_patch("svc/web", '[{"op":"add","path":"/spec/ports/-","value":{"name":"https","port":443,"targetPort":8443}}]'),
         "Service", "web", "/spec/ports/1", "kubectl-patch",
         lambda o: o is not None and len(o["spec"]["ports"]) == 1),
    Case("add-env-var",
         json_patch("deploy/web", '[{"op":"add","path":"/spec/template/spec/containers/0/env/-","value":{"name":"DEBUG","value":"1"}}]'),
         "Deployment", "web", "/spec/template/spec/containers/0/env/1", "kubectl-patch",
         lambda o: o is not None and len(container(o)["env"]) == 1),
    Case("delete", run("delete", "cm/web-config"), "ConfigMap", "web-config", "", None,
         lambda o: o is not None and o["data"] == {"DB_VERSION": "5.7", "LOG_LEVEL": "info"}),
    Case("server-side-apply", server_side_apply, "ConfigMap", "web-config", "/data/DB_VERSION", "intruder",
         lambda o: o is not None and o["data"]["DB_VERSION"] == "5.7"),
    Case("allowed-out-of-bounds", run("scale", "deploy/web", "--replicas=9"), "Deployment", "web",
         "/spec/replicas", "kubectl", replicas(2),
         allowed=[{"kind": "Deployment", "name": "web", "paths": ["/spec/replicas"], "minimum": 2, "maximum": 5}]),
]  # fmt: skip


def start(kubectl: Kubectl, namespace: str, mode: str, allowed: list[dict[str, Any]]) -> None:
    """Applies the blueprint in Enforce, then switches to the mode under test."""
    manifest = environment(ENV, namespace, blueprint(), allowedChanges=allowed)
    apply(kubectl, manifest)
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync")
    if mode == "Observe":
        manifest["spec"]["mode"] = "Observe"
        apply(kubectl, manifest)
        wait_for(
            lambda: status(kubectl, ENV, namespace).get("observedGeneration") == 2,
            message="the Observe generation to be seen",
        )


def counter(op: Operator, name: str, namespace: str, kind: str) -> float:
    return op.metric(name, namespace=namespace, environment=ENV, kind=kind)


@pytest.mark.parametrize("mode", ["Enforce", "Observe"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_manual_change(
    case: Case,
    mode: str,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """A manual change is detected, reported and reverted (Enforce) or left alone (Observe)."""
    start(kubectl, namespace, mode, case.allowed)
    detected = counter(operator, "driftguard_drift_detected_total", namespace, case.kind)
    reverted = counter(operator, "driftguard_drift_reverted_total", namespace, case.kind)
    writes_before = len(operator.writes(namespace))
    case.action(kubectl, namespace)
    if mode == "Enforce":
        check_reverted(case, kubectl, operator, namespace, reverted)
    else:
        check_flagged(case, kubectl, namespace, writes_before)
    wait_for(
        lambda: (
            counter(operator, "driftguard_drift_detected_total", namespace, case.kind) > detected
        ),
        message="driftguard_drift_detected_total to move",
    )
    settled = wait_for(
        lambda: status_settled(kubectl, operator, namespace, mode, case),
        message="status to report the outcome",
    )
    stays(
        lambda: (
            (len(operator.writes(namespace)), len(operator.writes(namespace, status=True)))
            == settled
        ),
        seconds=2,
        message="the operator wrote again (object or status) after the drift was handled",
    )


def status_settled(
    kubectl: Kubectl, operator: Operator, namespace: str, mode: str, case: Case
) -> tuple[int, int] | None:
    """The write counts, once status shows the final outcome of the change."""
    counts = (len(operator.writes(namespace)), len(operator.writes(namespace, status=True)))
    entry = resource_status(kubectl, ENV, namespace, case.kind, case.name)
    done = entry.get("state") == "InSync" if mode == "Enforce" else entry.get("state") != "InSync"
    return counts if done else None


def check_reverted(
    case: Case,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    reverted: float,
) -> None:
    resource = case.kind.lower()
    wait_for(
        lambda: case.is_blueprint(get(kubectl, resource, case.name, namespace)),
        message=f"{case.kind}/{case.name} to be reverted",
    )
    last = wait_for(
        lambda: (
            (status(kubectl, ENV, namespace).get("lastDrift") or {}).get("object")
            == f"{case.kind}/{namespace}/{case.name}"
            and status(kubectl, ENV, namespace)["lastDrift"]
        ),
        message="status.lastDrift to name the object",
    )
    if case.path:
        assert case.path in last["paths"]
    assert last.get("changedBy") == case.manager
    entry = resource_status(kubectl, ENV, namespace, case.kind, case.name)
    assert entry["reverts"] >= 1
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync")
    messages = wait_for(
        lambda: events(kubectl, namespace, "DriftReverted"), message="a DriftReverted Event"
    )
    assert any(f"{case.kind}/{namespace}/{case.name}" in m and case.path in m for m in messages)
    wait_for(
        lambda: (
            counter(operator, "driftguard_drift_reverted_total", namespace, case.kind) > reverted
        ),
        message="driftguard_drift_reverted_total to move",
    )


def check_flagged(case: Case, kubectl: Kubectl, namespace: str, writes_before: int) -> None:
    state = "Missing" if case.id == "delete" else "Drifted"
    entry = wait_for(
        lambda: (
            (e := resource_status(kubectl, ENV, namespace, case.kind, case.name)).get("state")
            == state
            and e
        ),
        message=f"{case.kind}/{case.name} to be reported {state}",
    )
    if case.path:
        assert case.path in entry["driftedPaths"]
    assert entry.get("changedBy") == case.manager
    condition = wait_condition(kubectl, ENV, namespace, "InSync", "False", reason="Drifted")
    assert f"{case.kind}/{namespace}/{case.name}" in condition["message"]
    messages = wait_for(
        lambda: events(kubectl, namespace, "DriftDetected"), message="a DriftDetected Event"
    )
    assert any(f"{case.kind}/{namespace}/{case.name}" in m for m in messages)
    assert not case.is_blueprint(get(kubectl, case.kind.lower(), case.name, namespace))


def test_observe_flags_a_change_in_a_churning_namespace(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """Observe over more objects it never labelled than it watches one by one, in a namespace
    where 40 other ConfigMaps change all the time: its unfiltered watch of the namespace is
    read in batches, and the one change that matters is still flagged, and left alone."""
    observed = [configmap("watched", v="1")]
    observed += [configmap(f"kept-{i:02d}", v="1") for i in range(NAMED_WATCHES)]
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(observed))
    apply(kubectl, environment(ENV, namespace, observed, mode="Observe"))
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync")

    stop = threading.Event()
    rounds = 0

    def churn() -> None:
        nonlocal rounds
        while not stop.is_set():
            noise = [configmap(f"noise-{i:02d}", n=str(rounds)) for i in range(40)]
            kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(noise))
            rounds += 1

    churning = threading.Thread(target=churn, daemon=True)
    churning.start()
    try:
        # The churn is the test's own kubectl (40 objects a round): slow on a loaded machine.
        wait_for(lambda: rounds >= 2, timeout=60, message="the namespace to churn")
        kubectl("patch", "-n", namespace, "cm/watched", "-p", '{"data":{"v":"by-hand"}}')
        entry = wait_for(
            lambda: (
                found
                if (found := resource_status(kubectl, ENV, namespace, "ConfigMap", "watched")).get(
                    "state"
                )
                == "Drifted"
                else None
            ),
            timeout=15,
            message="the change to be flagged while the namespace churns",
        )
        assert entry["driftedPaths"] == ["/data/v"]
        at = rounds
        wait_for(lambda: rounds >= at + 2, timeout=60, message="more churn after the flag")
    finally:
        stop.set()
        churning.join(timeout=30)
    live = get(kubectl, "configmap", "watched", namespace)
    assert live is not None
    assert live["data"]["v"] == "by-hand"  # Observe writes nothing


def test_observe_watches_few_unlabelled_objects_by_name_beside_enforce(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """Two Observe Environments over 40 unlabelled ConfigMaps each: every one is watched by
    name, filtered by the API server, never the namespace whole. 80 watches are more than
    the operator's pool of request connections: an Enforce Environment beside them still
    applies and reverts, and a change to an observed object is flagged."""
    groups = {group: [f"{group}-{i:02d}" for i in range(40)] for group in ("a", "b")}
    unlabelled = [configmap(name, v="1") for names in groups.values() for name in names]
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(unlabelled))
    for group, names in groups.items():
        observed = [configmap(name, v="1") for name in names]
        apply(kubectl, environment(f"observe-{group}", namespace, observed, mode="Observe"))
    for group in groups:
        wait_condition(kubectl, f"observe-{group}", namespace, "InSync", "True", reason="InSync")

    apply(kubectl, environment(ENV, namespace, [configmap("enforced", v="1")]))
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync")
    kubectl("patch", "-n", namespace, "cm/enforced", "-p", '{"data":{"v":"by-hand"}}')
    wait_for(
        lambda: (get(kubectl, "configmap", "enforced", namespace) or {}).get("data") == {"v": "1"},
        message="the Enforce Environment's object to be reverted",
    )
    kubectl("patch", "-n", namespace, "cm/b-39", "-p", '{"data":{"v":"by-hand"}}')
    wait_for(
        lambda: (
            resource_status(kubectl, "observe-b", namespace, "ConfigMap", "b-39").get("state")
            == "Drifted"
        ),
        message="the observed change to be flagged",
    )

    watched: set[str] = set()
    for event in audit_started(operator.audit_log):
        ref = event.get("objectRef") or {}
        if event.get("verb") != "watch" or ref.get("namespace") != namespace:
            continue
        query = parse_qs(urlsplit(event.get("requestURI", "")).query)
        assert query.get("labelSelector") or query.get("fieldSelector"), "an unfiltered watch"
        for selector in query.get("fieldSelector", []):
            watched.add(selector.removeprefix("metadata.name="))
    assert watched == {name for names in groups.values() for name in names}


def audit_started(audit_log: Path) -> list[dict[str, Any]]:
    """Watches the API server started, as the operator (a watch completes only when it ends)."""
    started = []
    for line in audit_log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        user = event.get("user", {}).get("username")
        if event.get("stage") == "ResponseStarted" and user == OPERATOR_USER:
            started.append(event)
    return started
