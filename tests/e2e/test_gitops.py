"""GitOps tools apply Environments; the operator's own writes never show up as their diff.

Flux's kustomize-controller applies server-side as field manager `kustomize-controller`
(forcing conflicts) and detects drift with a server-side dry run; Argo CD applies
client-side, keeping the last-applied-configuration annotation, and diffs against it.
Both are reproduced with real kubectl: apply, let the operator write everything it writes
(status, Events, history records, a drift revert, Blueprint status), then diff with the
tool's own method (nothing), apply again (no new resourceVersion), diff again (nothing).
"""

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from envs import (
    Operator,
    configmap,
    deployment,
    environment,
    events,
    resource_status,
    wait_condition,
)
from helpers import ROOT, Kubectl, wait_for
from lupa import lua51

# What kustomize-controller does: server-side apply, its own field manager, conflicts forced.
FLUX_APPLY = ("apply", "--server-side", "--field-manager=kustomize-controller", "--force-conflicts")
FLUX_DIFF = ("diff", "--server-side", "--field-manager=kustomize-controller", "--force-conflicts")
# What Argo CD does by default: client-side apply (last-applied annotation), then its diff.
ARGO_APPLY = ("apply",)
ARGO_DIFF = ("diff",)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
GITOPS = ROOT / "examples" / "gitops"


def argocd_health(obj: dict[str, Any]) -> str:
    """examples/gitops' Argo CD health script (Lua 5.1, as Argo CD's gopher-lua) on an object."""
    config = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(config["data"]["resource.customizations.health.driftguard.io_Environment"])
    return str(result["status"])


def flux_verdicts(obj: dict[str, Any]) -> set[str]:
    """Which of examples/gitops' Flux healthCheckExprs hold for an object."""
    docs = yaml.safe_load_all((GITOPS / "flux" / "environments.yaml").read_text())
    kustomization = next(doc for doc in docs if doc["kind"] == "Kustomization")
    (check,) = kustomization["spec"]["healthCheckExprs"]
    env = celpy.Environment()
    activation = {
        key: celpy.json_to_cel(obj.get(key, {})) for key in ("metadata", "spec", "status")
    }
    verdicts = ("inProgress", "failed", "current")
    return {v for v in verdicts if bool(env.program(env.compile(check[v])).evaluate(activation))}


@pytest.fixture
def blueprint(kubectl: Kubectl) -> Iterator[str]:
    """A fresh Blueprint name (Blueprints are cluster-scoped), deleted after the test."""
    name = f"gitops-{secrets.token_hex(3)}"
    yield name
    kubectl("delete", "blueprint", name, "--ignore-not-found", "--wait=false")


def folder(namespace: str, blueprint: str) -> list[dict[str, Any]]:
    """What a GitOps folder holds: a Blueprint, an Environment made from it, and a plain one."""
    shared = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Blueprint",
        "metadata": {"name": blueprint},
        "spec": {
            "values": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"logLevel": {"type": "string", "default": "info"}},
            },
            "resources": [configmap("shop-config", LOG_LEVEL="placeholder")],
            "parameters": [
                {
                    "name": "logLevel",
                    "targets": [
                        {"kind": "ConfigMap", "name": "shop-config", "path": "/data/LOG_LEVEL"}
                    ],
                }
            ],
        },
    }
    made = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {"blueprintRef": {"name": blueprint}, "values": {"logLevel": "debug"}},
    }
    plain = environment(
        "web", namespace, [configmap("web-config", MODE="fast"), deployment("web")], prune=True
    )
    return [shared, made, plain]


def write(tmp_path: Path, manifests: list[dict[str, Any]]) -> Path:
    path = tmp_path / "environments.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    return path


def versions(kubectl: Kubectl, namespace: str, blueprint: str) -> dict[str, str]:
    """resourceVersion of the Blueprint and of each Environment in the namespace."""
    found = {
        "blueprint": kubectl.json("get", "blueprint", blueprint)["metadata"]["resourceVersion"]
    }
    for item in kubectl.json("get", "environments", "-n", namespace)["items"]:
        found[item["metadata"]["name"]] = item["metadata"]["resourceVersion"]
    return found


def let_the_operator_write_everything(kubectl: Kubectl, namespace: str, blueprint: str) -> None:
    """Ready and in sync, then a drift in each Environment reverted: status, Events, history."""
    for name in ("shop", "web"):
        wait_condition(kubectl, name, namespace, "InSync", "True", timeout=30)
    wait_for(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (kubectl.json("get", "blueprint", blueprint).get("status") or {}).get(
                "conditions", []
            )
        ),
        timeout=30,
        message="the Blueprint Ready",
    )
    for env, name, key in (("shop", "shop-config", "LOG_LEVEL"), ("web", "web-config", "MODE")):
        kubectl("patch", "configmap", name, "-n", namespace, "-p", json.dumps({"data": {key: "x"}}))
        wait_for(
            lambda env=env, name=name: (
                resource_status(kubectl, env, namespace, "ConfigMap", name).get("reverts", 0) >= 1
            ),
            timeout=30,
            message=f"{name} reverted and counted in {env}'s status",
        )
    assert len(events(kubectl, namespace, "DriftReverted")) >= 2
    history = kubectl.json("get", "controllerrevisions", "-n", namespace)["items"]
    assert history, "no history records: the test would not cover the operator's history writes"


def assert_no_diff(kubectl: Kubectl, diff: tuple[str, ...], path: Path) -> None:
    done = kubectl(*diff, "-f", str(path), check=False)
    # kubectl diff: exit 0 and no output when nothing differs, 1 with a diff, >1 on error.
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def assert_generation_one(kubectl: Kubectl, namespace: str) -> None:
    """The operator never touched a spec: each Environment is still at its first generation."""
    items = kubectl.json("get", "environments", "-n", namespace)["items"]
    assert {item["metadata"]["name"]: item["metadata"]["generation"] for item in items} == {
        "shop": 1,
        "web": 1,
    }


def test_flux_server_side_apply_sees_no_diff_from_the_operator(
    operator: Operator, kubectl: Kubectl, namespace: str, blueprint: str, tmp_path: Path
) -> None:
    """Applied as kustomize-controller, diffed server-side: nothing, before and after re-applies."""
    path = write(tmp_path, folder(namespace, blueprint))
    kubectl(*FLUX_APPLY, "-f", str(path))
    let_the_operator_write_everything(kubectl, namespace, blueprint)
    assert_no_diff(kubectl, FLUX_DIFF, path)
    before = versions(kubectl, namespace, blueprint)
    for _ in range(2):
        kubectl(*FLUX_APPLY, "-f", str(path))
        assert versions(kubectl, namespace, blueprint) == before, "a re-apply changed something"
    assert_no_diff(kubectl, FLUX_DIFF, path)
    assert_generation_one(kubectl, namespace)
    # The examples' health checks read the live Environments, drift reverted, as healthy.
    for item in kubectl.json("get", "environments", "-n", namespace)["items"]:
        assert (argocd_health(item), flux_verdicts(item)) == ("Healthy", {"current"}), item
    # Why: kustomize-controller owns the whole spec; the operator's manager owns no spec field.
    listing = kubectl.json("get", "environments", "-n", namespace, "--show-managed-fields")
    for item in listing["items"]:
        managers = {entry["manager"] for entry in item["metadata"]["managedFields"]}
        assert "kustomize-controller" in managers, managers
        for entry in item["metadata"]["managedFields"]:
            if entry["manager"] == "kustomize-controller":
                continue
            fields = entry.get("fieldsV1", {})
            assert "f:spec" not in fields, (item["metadata"]["name"], entry)
            assert "f:annotations" not in fields.get("f:metadata", {}), entry


def test_argocd_client_side_apply_sees_no_diff_from_the_operator(
    operator: Operator, kubectl: Kubectl, namespace: str, blueprint: str, tmp_path: Path
) -> None:
    """Applied client-side with the last-applied annotation, then kubectl diff: nothing, twice."""
    manifests = folder(namespace, blueprint)
    path = write(tmp_path, manifests)
    kubectl(*ARGO_APPLY, "-f", str(path))
    let_the_operator_write_everything(kubectl, namespace, blueprint)
    assert_no_diff(kubectl, ARGO_DIFF, path)
    before = versions(kubectl, namespace, blueprint)
    for _ in range(2):
        done = kubectl(*ARGO_APPLY, "-f", str(path))
        assert done.stdout.count("unchanged") == 3, done.stdout
        assert versions(kubectl, namespace, blueprint) == before, "a re-apply changed something"
    assert_no_diff(kubectl, ARGO_DIFF, path)
    assert_generation_one(kubectl, namespace)
    # The annotation Argo CD diffs against is still exactly what was applied.
    for manifest in manifests[1:]:
        name = manifest["metadata"]["name"]
        live = kubectl.json("get", "environment", name, "-n", namespace)
        recorded = json.loads(live["metadata"]["annotations"][LAST_APPLIED])
        # kubectl itself records an empty annotations map beside the manifest's metadata.
        assert recorded["metadata"].pop("annotations", {}) == {}
        assert recorded == manifest


def test_get_wide_shows_target_managed_ready_and_the_last_drift(
    operator: Operator, kubectl: Kubectl, namespace: str
) -> None:
    """`kubectl get env -o wide` adds Target, Managed, Ready and the last drift's time and author."""
    manifest = environment("wide", namespace, [configmap("c", A="1")], targetNamespace=namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    wait_condition(kubectl, "wide", namespace, "InSync", "True", timeout=30)
    kubectl("patch", "configmap", "c", "-n", namespace, "-p", '{"data":{"A":"2"}}')
    wait_for(
        lambda: resource_status(kubectl, "wide", namespace, "ConfigMap", "c").get("reverts", 0),
        timeout=30,
        message="the patch reverted",
    )
    narrow = kubectl("get", "env", "wide", "-n", namespace).stdout.splitlines()[0].split()
    assert not {"TARGET", "MANAGED", "CHANGED"} & set(narrow), narrow
    header, row = kubectl("get", "env", "wide", "-n", namespace, "-o", "wide").stdout.splitlines()
    # Columns are fixed-width: cut the row where each header starts.
    starts = [
        header.index(name) for name in ("TARGET", "MANAGED", "READY", "LAST DRIFT", "CHANGED BY")
    ]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    assert cells[:3] == [namespace, "1", "Applied"], cells
    assert re.fullmatch(r"(\d+[smhd])+", cells[3]), cells  # an age, such as 3s or 2m5s
    assert cells[4] == "kubectl-patch", cells
