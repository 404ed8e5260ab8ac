"""Many clusters: Environments on a hub whose objects live in two remote control planes.

The hub is the session's control plane and operator. The remotes are two more real control
planes, started once for this module, on which the chart's RBAC is applied: the operator
reaches each with a kubeconfig Secret holding a token of the chart's ServiceAccount there,
never as an admin.
"""

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from envs import (
    Operator,
    allow_impersonation,
    apply,
    chart_kubeconfig,
    condition,
    configmap,
    environment,
    events,
    get,
    install_crd,
    resource_status,
    run_cli,
    stays,
    wait_condition,
)
from helpers import Kubectl, start_control_plane, wait_for

from driftguard.controlplane import ControlPlane

DB = "db-config"


@dataclass
class Remote:
    """One remote cluster: its control plane, kubectl as admin there, the operator's
    kubeconfig for it (the chart's ServiceAccount)."""

    plane: ControlPlane
    kubectl: Kubectl
    operator_kubeconfig: Path


@pytest.fixture(scope="module")
def remotes(operator: Operator, chart_rbac: list[dict[str, Any]]) -> Iterator[list[Remote]]:
    """Two remote control planes beside the hub, with the chart's RBAC on each."""
    started: list[ControlPlane] = []
    try:
        found = []
        for _ in range(2):
            plane = start_control_plane()
            started.append(plane)
            admin = Kubectl(plane.kubeconfig)
            install_crd(admin)  # for teams with an operator per cluster (compare --context)
            found.append(Remote(plane, admin, chart_kubeconfig(plane, admin, chart_rbac)))
        yield found
    finally:
        for plane in started:
            plane.stop()


def kubeconfig_secret(kubectl: Kubectl, namespace: str, name: str, text: str) -> None:
    """Creates or replaces the Secret holding a kubeconfig under the key `value`."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"value": base64.b64encode(text.encode()).decode()},
    }
    apply(kubectl, secret)


def remote_environment(
    name: str, namespace: str, secret: str, resources: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    return environment(
        name, namespace, resources, kubeConfig={"secretRef": {"name": secret}}, **spec
    )


def in_remote(remote: Remote, namespace: str) -> None:
    """The namespace exists in the remote cluster too (objects go there by default)."""
    remote.kubectl("create", "namespace", namespace, check=False)


def data_of(kubectl: Kubectl, namespace: str, name: str = DB) -> dict[str, str] | None:
    found = get(kubectl, "configmap", name, namespace)
    return dict(found.get("data") or {}) if found else None


def downgrade(remote: Remote, namespace: str, version: str = "5.5") -> None:
    """A person's `kubectl patch` of the database's version, in that cluster."""
    body = json.dumps({"data": {"DB_VERSION": version}})
    remote.kubectl("patch", "configmap", DB, "-n", namespace, "-p", body)


def reverted(
    remote: Remote, namespace: str, version: str, message: str, timeout: float = 10
) -> None:
    """Waits until the database's version in that cluster is the blueprint's again."""
    wait_for(
        lambda: data_of(remote.kubectl, namespace) == {"DB_VERSION": version},
        timeout=timeout,
        message=message,
    )


def test_an_environment_applies_reverts_and_observes_in_a_remote_cluster(
    operator: Operator, kubectl: Kubectl, namespace: str, remotes: list[Remote]
) -> None:
    """The objects go to the remote cluster, a patch there is reverted (Enforce) or only
    flagged (Observe); status and Events stay on the hub, metrics name the cluster."""
    remote = remotes[0]
    in_remote(remote, namespace)
    kubeconfig_secret(
        kubectl, namespace, "staging-kubeconfig", remote.operator_kubeconfig.read_text()
    )
    apply(
        kubectl,
        remote_environment(
            "app", namespace, "staging-kubeconfig", [configmap(DB, DB_VERSION="5.7")]
        ),
    )
    wait_condition(kubectl, "app", namespace, "Ready", "True", timeout=30)
    assert data_of(remote.kubectl, namespace) == {"DB_VERSION": "5.7"}
    assert data_of(kubectl, namespace) is None, "nothing applied on the hub"
    labels = get(remote.kubectl, "configmap", DB, namespace)["metadata"]["labels"]  # type: ignore[index]
    assert labels["driftguard.io/environment"] == "app"

    downgrade(remote, namespace)
    reverted(remote, namespace, "5.7", "the downgrade reverted in the remote cluster")
    wait_for(
        lambda: (
            (condition(kubectl, "app", namespace, "InSync").get("status") == "True")
            and any("DB_VERSION" in m for m in events(kubectl, namespace, "DriftReverted"))
        ),
        timeout=15,
        message="a DriftReverted Event on the hub",
    )
    info = operator.metric("driftguard_environment_info", namespace=namespace, environment="app")
    assert info == 1.0
    assert (
        operator.metric(
            "driftguard_environment_info",
            namespace=namespace,
            environment="app",
            cluster=f"{namespace}/staging-kubeconfig",
        )
        == 1.0
    )
    assert (
        operator.metric("driftguard_cluster_connected", cluster=f"{namespace}/staging-kubeconfig")
        == 1.0
    )

    apply(
        kubectl,
        remote_environment(
            "watch", namespace, "staging-kubeconfig", [configmap("seen", A="1")], mode="Observe"
        ),
    )
    remote.kubectl("create", "configmap", "seen", "-n", namespace, "--from-literal=A=1")
    wait_condition(kubectl, "watch", namespace, "InSync", "True", timeout=30)
    remote.kubectl("patch", "configmap", "seen", "-n", namespace, "-p", '{"data":{"A":"2"}}')
    wait_for(
        lambda: (
            resource_status(kubectl, "watch", namespace, "ConfigMap", "seen").get("state")
            == "Drifted"
        ),
        timeout=15,
        message="Observe flags the remote drift",
    )
    assert data_of(remote.kubectl, namespace, "seen") == {"A": "2"}, "Observe never writes"
    # diff reads the live objects in the cluster the Environment acts in, not the hub's.
    drifted = run_cli(kubectl, "diff", "watch", "-n", namespace)
    assert drifted.returncode == 1, drifted.stderr
    assert "ConfigMap" in drifted.stdout
    assert "seen" in drifted.stdout
    assert "A: '2'" in drifted.stdout, drifted.stdout
    clean = run_cli(kubectl, "diff", "app", "-n", namespace)
    assert (clean.returncode, clean.stdout) == (0, ""), clean.stderr


def test_a_kubeconfig_that_runs_a_program_is_refused(
    operator: Operator, kubectl: Kubectl, namespace: str, remotes: list[Remote]
) -> None:
    """exec in a kubeconfig Secret: Ready=False KubeConfigInvalid naming it, nothing applied."""
    config = yaml.safe_load(remotes[0].operator_kubeconfig.read_text())
    config["users"][0]["user"] = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/true"}
    }
    kubeconfig_secret(kubectl, namespace, "bad", yaml.safe_dump(config))
    apply(kubectl, remote_environment("app", namespace, "bad", [configmap(DB, DB_VERSION="5.7")]))
    ready = wait_condition(
        kubectl, "app", namespace, "Ready", "False", reason="KubeConfigInvalid", timeout=30
    )
    assert "users[].user.exec" in ready["message"]
    assert "--insecure-kubeconfig-exec" in ready["message"]
    assert data_of(kubectl, namespace) is None
    assert data_of(remotes[0].kubectl, namespace) is None

    kubeconfig_secret(kubectl, namespace, "bad", remotes[0].operator_kubeconfig.read_text())
    in_remote(remotes[0], namespace)
    wait_condition(kubectl, "app", namespace, "Ready", "True", timeout=30)
    assert data_of(remotes[0].kubectl, namespace) == {"DB_VERSION": "5.7"}, (
        "the fixed Secret is used"
    )


def test_a_rotated_kubeconfig_is_used_and_what_drifted_while_away_is_reverted(
    operator: Operator, kubectl: Kubectl, namespace: str, remotes: list[Remote]
) -> None:
    """A Secret pointing nowhere makes only that Environment ClusterUnreachable; put back,
    the change made meanwhile is reverted without a restart."""
    first, second = remotes
    for remote in remotes:
        in_remote(remote, namespace)
    good = first.operator_kubeconfig.read_text()
    kubeconfig_secret(kubectl, namespace, "one", good)
    kubeconfig_secret(kubectl, namespace, "two", second.operator_kubeconfig.read_text())
    apply(kubectl, remote_environment("a", namespace, "one", [configmap(DB, DB_VERSION="5.7")]))
    apply(kubectl, remote_environment("b", namespace, "two", [configmap(DB, DB_VERSION="5.7")]))
    wait_condition(kubectl, "a", namespace, "Ready", "True", timeout=30)
    wait_condition(kubectl, "b", namespace, "Ready", "True", timeout=30)

    nowhere = yaml.safe_load(good)
    nowhere["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens
    kubeconfig_secret(kubectl, namespace, "one", yaml.safe_dump(nowhere))
    ready = wait_condition(
        kubectl, "a", namespace, "Ready", "False", reason="ClusterUnreachable", timeout=30
    )
    assert "retried" in ready["message"]
    token = yaml.safe_load(good)["users"][0]["user"]["token"]
    assert token not in ready["message"], "a credential in status"
    downgrade(first, namespace)
    downgrade(second, namespace)
    reverted(second, namespace, "5.7", "the other cluster's Environment still reverts")
    assert condition(kubectl, "b", namespace, "Ready")["status"] == "True"
    assert data_of(first.kubectl, namespace) == {"DB_VERSION": "5.5"}

    kubeconfig_secret(kubectl, namespace, "one", good)
    reverted(first, namespace, "5.7", "the drift made while away reverted, the Secret back", 30)
    wait_condition(kubectl, "a", namespace, "Ready", "True", timeout=15)


def test_a_remote_api_server_stopped_and_started_again(
    operator: Operator, kubectl: Kubectl, namespace: str, remotes: list[Remote]
) -> None:
    """Its Environment says ClusterUnreachable within seconds while the other cluster's is
    untouched; back, its watches work again and a drift is reverted."""
    first, second = remotes
    for remote in remotes:
        in_remote(remote, namespace)
    kubeconfig_secret(kubectl, namespace, "one", first.operator_kubeconfig.read_text())
    kubeconfig_secret(kubectl, namespace, "two", second.operator_kubeconfig.read_text())
    apply(kubectl, remote_environment("a", namespace, "one", [configmap(DB, DB_VERSION="5.7")]))
    apply(kubectl, remote_environment("b", namespace, "two", [configmap(DB, DB_VERSION="5.7")]))
    wait_condition(kubectl, "a", namespace, "Ready", "True", timeout=30)
    wait_condition(kubectl, "b", namespace, "Ready", "True", timeout=30)

    second.plane.kill("kube-apiserver")
    try:
        wait_condition(
            kubectl, "b", namespace, "Ready", "False", reason="ClusterUnreachable", timeout=30
        )
        assert operator.metric("driftguard_cluster_connected", cluster=f"{namespace}/two") == 0.0
        in_sync = condition(kubectl, "b", namespace, "InSync")
        assert (in_sync["status"], in_sync["reason"]) == ("Unknown", "ClusterUnreachable")
        downgrade(first, namespace)
        reverted(first, namespace, "5.7", "the reachable cluster's drift reverted meanwhile")
        assert condition(kubectl, "a", namespace, "Ready")["status"] == "True"
    finally:
        second.plane.start_component("kube-apiserver")
    wait_condition(kubectl, "b", namespace, "Ready", "True", timeout=60)
    downgrade(second, namespace)
    reverted(second, namespace, "5.7", "a drift reverted after the API server came back", 30)


def test_one_blueprint_in_three_clusters_and_compare_across_them(
    operator: Operator, kubectl: Kubectl, namespace: str, remotes: list[Remote], tmp_path: Path
) -> None:
    """dev here, staging and prod in the remotes, one Blueprint: compare shows 5.7 against
    5.5 from the hub, and across kubeconfig contexts."""
    first, second = remotes
    for remote in remotes:
        in_remote(remote, namespace)
    name = f"db-{secrets.token_hex(3)}"
    apply(kubectl, blueprint(name))
    try:
        kubeconfig_secret(kubectl, namespace, "staging", first.operator_kubeconfig.read_text())
        kubeconfig_secret(kubectl, namespace, "prod", second.operator_kubeconfig.read_text())
        apply(kubectl, made_from("dev", namespace, name, values={"dbVersion": "5.7"}))
        apply(
            kubectl,
            made_from("staging", namespace, name, values={"dbVersion": "5.7"}, secret="staging"),
        )
        apply(
            kubectl, made_from("prod", namespace, name, values={"dbVersion": "5.5"}, secret="prod")
        )
        for env in ("dev", "staging", "prod"):
            wait_condition(kubectl, env, namespace, "Ready", "True", timeout=30)
        assert data_of(kubectl, namespace) == {"DB_VERSION": "5.7"}
        assert data_of(first.kubectl, namespace) == {"DB_VERSION": "5.7"}
        assert data_of(second.kubectl, namespace) == {"DB_VERSION": "5.5"}

        done = run_cli(kubectl, "compare", "--blueprint", name, "-o", "json")
        assert done.returncode == 0, done.stderr
        rows = {row["path"]: row for row in json.loads(done.stdout)["rows"]}
        row = rows["/data/DB_VERSION"]
        assert row["declaredDiffers"] is True
        assert row["live"] == {
            f"{namespace}/dev": "5.7",
            f"{namespace}/prod": "5.5",
            f"{namespace}/staging": "5.7",
        }

        # A downgrade by hand in prod's cluster is reverted; compare would show it meanwhile.
        downgrade(second, namespace, "5.1")
        reverted(second, namespace, "5.5", "prod's downgrade reverted in its own cluster")

        # One operator per cluster: the same Environments read through kubeconfig contexts.
        merged = contexts_kubeconfig(tmp_path, {"hub": kubectl, "prod-cluster": second.kubectl})
        apply(second.kubectl, environment("prod", namespace, [configmap(DB, DB_VERSION="5.5")]))
        across = (f"{namespace}/dev", f"{namespace}/prod", "--context", "hub", "--context")
        done = run_cli(Kubectl(merged), "compare", *across, "prod-cluster", "-o", "json")
        assert done.returncode == 0, done.stderr
        row = {r["path"]: r for r in json.loads(done.stdout)["rows"]}["/data/DB_VERSION"]
        assert row["live"] == {
            f"hub:{namespace}/dev": "5.7",
            f"prod-cluster:{namespace}/prod": "5.5",
        }
        table = run_cli(Kubectl(merged), "compare", *across, "prod-cluster")
        assert "5.7" in table.stdout, table.stdout
        assert "5.5" in table.stdout, table.stdout
    finally:
        kubectl("delete", "blueprint", name, "--ignore-not-found", "--wait=false")


def test_tenancy_impersonates_the_service_account_in_the_remote_cluster(
    operator: Operator, kubectl: Kubectl, namespace: str, remotes: list[Remote]
) -> None:
    """serviceAccountName names a ServiceAccount there, whose RBAC bounds the blueprint:
    ConfigMaps allowed, a Service Forbidden, with the remote identity in the message."""
    remote = remotes[0]
    in_remote(remote, namespace)
    remote.kubectl("create", "serviceaccount", "deployer", "-n", namespace)
    allow_impersonation(remote.kubectl, namespace)
    remote.kubectl(
        "create",
        "role",
        "configmaps",
        "-n",
        namespace,
        "--verb=get,list,watch,create,patch,delete",
        "--resource=configmaps",
    )
    remote.kubectl(
        "create",
        "rolebinding",
        "deployer",
        "-n",
        namespace,
        "--role=configmaps",
        f"--serviceaccount={namespace}:deployer",
    )
    kubeconfig_secret(kubectl, namespace, "remote", remote.operator_kubeconfig.read_text())
    apply(
        kubectl,
        remote_environment(
            "app",
            namespace,
            "remote",
            [configmap(DB, DB_VERSION="5.7")],
            serviceAccountName="deployer",
        ),
    )
    wait_condition(kubectl, "app", namespace, "Ready", "True", timeout=30)
    assert data_of(remote.kubectl, namespace) == {"DB_VERSION": "5.7"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},
    }
    apply(
        kubectl,
        remote_environment(
            "app",
            namespace,
            "remote",
            [configmap(DB, DB_VERSION="5.7"), service],
            serviceAccountName="deployer",
        ),
    )
    ready = wait_condition(
        kubectl, "app", namespace, "Ready", "False", reason="Forbidden", timeout=30
    )
    assert f"system:serviceaccount:{namespace}:deployer" in ready["message"]
    stays(
        lambda: get(remote.kubectl, "service", "web", namespace) is None,
        seconds=1.0,
        message="the Service is never made in the remote cluster",
    )


# helpers


def blueprint(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Blueprint",
        "metadata": {"name": name},
        "spec": {
            "values": {
                "type": "object",
                "properties": {"dbVersion": {"type": "string", "default": "5.7"}},
            },
            "resources": [configmap(DB, DB_VERSION="placeholder")],
            "parameters": [
                {
                    "name": "dbVersion",
                    "targets": [{"kind": "ConfigMap", "name": DB, "path": "/data/DB_VERSION"}],
                }
            ],
        },
    }


def made_from(
    name: str, namespace: str, blueprint_name: str, *, values: dict[str, Any], secret: str = ""
) -> dict[str, Any]:
    spec: dict[str, Any] = {"blueprintRef": {"name": blueprint_name}, "values": values}
    if secret:
        spec["kubeConfig"] = {"secretRef": {"name": secret}}
    return {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def contexts_kubeconfig(directory: Path, named: dict[str, Kubectl]) -> Path:
    """One kubeconfig with a context per cluster (admin in each), as a person's would be."""
    merged: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
    }
    for context, kubectl in named.items():
        config = yaml.safe_load(kubectl.kubeconfig.read_text())
        merged["clusters"].append({"name": context, "cluster": config["clusters"][0]["cluster"]})
        merged["users"].append({"name": context, "user": config["users"][0]["user"]})
        merged["contexts"].append(
            {"name": context, "context": {"cluster": context, "user": context}}
        )
    merged["current-context"] = next(iter(named))
    path = directory / "contexts.kubeconfig"
    path.write_text(yaml.safe_dump(merged))
    path.chmod(0o600)
    return path
