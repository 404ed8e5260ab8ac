"""The objects the benchmark creates: Environments, their blueprints, floor and noise ConfigMaps.

Pure: manifests and names only. Objects are small (ConfigMaps with three keys, Deployments with
zero replicas) so that thousands of them fit a 2-core machine; what is measured is the work per
object and per event, not payload size.
"""

from __future__ import annotations

from typing import Any

GROUP_VERSION = "driftguard.io/v1alpha1"
ENV_NAME = "blueprint"
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=driftguard"
FLOOR_LABEL = "bench.driftguard.io/floor"
FLOOR_SELECTOR = f"{FLOOR_LABEL}=true"
FLOOR_MANAGER = "bench-floor"
MANUAL_MANAGER = "bench-manual"

# The value the blueprint sets, which every manual change alters and every revert restores.
CM_KEY = "a"
CM_VALUE = "1"
DEPLOY_VALUE = 1  # spec.minReadySeconds


def namespace(index: int) -> str:
    return f"bench-{index:03d}"


def cm_name(index: int) -> str:
    return f"cm-{index:03d}"


def cm_data(index: int) -> dict[str, str]:
    return {CM_KEY: CM_VALUE, "b": "two", "c": f"object-{index}"}


def configmap(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": cm_name(index)},
        "data": cm_data(index),
    }


def deployment(name: str) -> dict[str, Any]:
    """Zero replicas: the controller manager makes a ReplicaSet and writes status, no Pods."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "minReadySeconds": DEPLOY_VALUE,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/bench:1"}]},
            },
        },
    }


def blueprint(*, configmaps: int, deployments: int) -> list[dict[str, Any]]:
    resources = [configmap(i) for i in range(configmaps)]
    resources += [deployment(f"web-{i}") for i in range(deployments)]
    return resources


def environment(
    namespace: str,
    resources: list[dict[str, Any]],
    *,
    mode: str = "Enforce",
    name: str = ENV_NAME,
    resync: str = "10m",
) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"mode": mode, "resyncInterval": resync, "resources": resources},
    }


def floor_configmap(namespace: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"floor-{index:03d}",
            "namespace": namespace,
            "labels": {FLOOR_LABEL: "true"},
        },
        "data": cm_data(index),
    }


def noise_configmap(namespace: str, index: int, *, prefix: str = "noise") -> dict[str, Any]:
    """An unrelated ConfigMap: no driftguard label, so no driftguard watch should deliver it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{prefix}-{index:04d}", "namespace": namespace},
        "data": {"n": "0"},
    }


def cm_value(obj: dict[str, Any]) -> str | None:
    """The observed projection of a ConfigMap: the key manual changes alter."""
    data = obj.get("data") or {}
    value = data.get(CM_KEY)
    return None if value is None else str(value)


def deploy_value(obj: dict[str, Any]) -> int:
    value = (obj.get("spec") or {}).get("minReadySeconds")
    return int(value) if value is not None else 0
