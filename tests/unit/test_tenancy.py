"""tenancy: who an Environment acts as, and where it may write when it acts as the operator."""

from __future__ import annotations

from typing import Any

import pytest

from driftguard.core import model
from driftguard.core.tenancy import RefusedError, Tenancy

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def is_namespaced(_: str, kind: str) -> bool:
    return kind not in CLUSTER_SCOPED


def spec(*resources: dict[str, Any], **fields: Any) -> model.EnvironmentSpec:
    return model.parse_spec({"resources": list(resources), **fields})


def obj(kind: str, name: str = "x", namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


@pytest.mark.parametrize(
    ("tenancy", "blueprint"),
    [
        (Tenancy(), spec(obj("ConfigMap"))),
        (Tenancy(), spec(obj("ConfigMap", namespace="team-a"))),
        (
            Tenancy(allowed_target_namespaces=("staging", "dev-*")),
            spec(obj("ConfigMap"), targetNamespace="dev-1"),
        ),
        (Tenancy(allow_cluster_scoped=True), spec(obj("Namespace"))),
        (
            Tenancy(),
            spec(
                obj("ConfigMap"),
                obj("Namespace"),
                targetNamespace="kube-system",
                serviceAccountName="deployer",
            ),
        ),
        (
            Tenancy(default_service_account="tenant"),
            spec(obj("ClusterRole"), targetNamespace="kube-system"),
        ),
    ],
    ids=[
        "own-namespace",
        "own-namespace-named",
        "allowed-glob",
        "cluster-scoped-allowed",
        "impersonated",
        "default-account",
    ],
)
def test_confine_allows(tenancy: Tenancy, blueprint: model.EnvironmentSpec) -> None:
    """What an Environment may write: its own namespace, allowed globs, or anything RBAC allows its ServiceAccount."""
    tenancy.confine(blueprint, "team-a", is_namespaced=is_namespaced)


@pytest.mark.parametrize(
    ("tenancy", "blueprint", "expected"),
    [
        (
            Tenancy(),
            spec(obj("ConfigMap"), targetNamespace="kube-system"),
            "spec.resources[0] (ConfigMap/x): namespace 'kube-system'",
        ),
        (
            Tenancy(),
            spec(obj("ConfigMap"), obj("Secret", namespace="team-b")),
            "spec.resources[1] (Secret/x): namespace 'team-b'",
        ),
        (
            Tenancy(allowed_target_namespaces=("dev-*",)),
            spec(obj("ConfigMap"), targetNamespace="prod"),
            "--allow-target-namespaces",
        ),
        (
            Tenancy(),
            spec(obj("ConfigMap"), obj("ClusterRoleBinding")),
            "spec.resources[1] (ClusterRoleBinding/x): ClusterRoleBinding is cluster-scoped",
        ),
    ],
    ids=["other-namespace", "one-of-two", "glob-misses", "cluster-scoped"],
)
def test_confine_refuses(tenancy: Tenancy, blueprint: model.EnvironmentSpec, expected: str) -> None:
    """A blueprint acting as the operator that reaches elsewhere is refused, naming spec.resources[i] and why."""
    with pytest.raises(RefusedError) as refused:
        tenancy.confine(blueprint, "team-a", is_namespaced=is_namespaced)

    assert expected in str(refused.value)


@pytest.mark.parametrize(
    ("tenancy", "fields", "expected"),
    [
        (Tenancy(), {}, ""),
        (Tenancy(), {"serviceAccountName": "deployer"}, "system:serviceaccount:team-a:deployer"),
        (Tenancy(default_service_account="tenant"), {}, "system:serviceaccount:team-a:tenant"),
        (
            Tenancy(default_service_account="tenant"),
            {"serviceAccountName": "deployer"},
            "system:serviceaccount:team-a:deployer",
        ),
    ],
    ids=["operator", "named", "default", "named-wins"],
)
def test_identity(tenancy: Tenancy, fields: dict[str, Any], expected: str) -> None:
    """The identity impersonated: the Environment's ServiceAccount, else the default, else none."""
    assert tenancy.identity(spec(obj("ConfigMap"), **fields), "team-a") == expected


@pytest.mark.parametrize(
    ("tenancy", "fields", "namespace", "expected"),
    [
        (
            Tenancy(),
            {"serviceAccountName": "someone"},
            "kube-system",
            "spec.serviceAccountName: ServiceAccount kube-system/someone is in kube-system, "
            "the cluster's own controllers' namespace",
        ),
        (
            Tenancy(default_service_account="tenant", operator_namespace="ops"),
            {},
            "ops",
            "--default-service-account: ServiceAccount ops/tenant is in ops, "
            "the operator's own namespace",
        ),
    ],
    ids=["kube-system-named", "operator-namespace-default"],
)
def test_refuse_protected_refuses(
    tenancy: Tenancy, fields: dict[str, Any], namespace: str, expected: str
) -> None:
    """A ServiceAccount in kube-system or the operator's namespace is refused, saying whence and where."""
    with pytest.raises(RefusedError) as refused:
        tenancy.refuse_protected(spec(obj("ConfigMap"), **fields), namespace)

    assert str(refused.value).startswith(expected)
    assert "never impersonates a ServiceAccount in kube-system or in" in str(refused.value)


@pytest.mark.parametrize(
    ("tenancy", "fields", "namespace"),
    [
        (Tenancy(), {}, "kube-system"),
        (Tenancy(), {"serviceAccountName": "deployer"}, "team-a"),
        (
            Tenancy(default_service_account="tenant", operator_namespace="ops"),
            {},
            "driftguard-system",
        ),
    ],
    ids=["no-serviceaccount-in-kube-system", "tenant-namespace", "other-than-operator-namespace"],
)
def test_refuse_protected_lets_through(
    tenancy: Tenancy, fields: dict[str, Any], namespace: str
) -> None:
    """Acting as the operator, or as a ServiceAccount of any other namespace, is not refused here."""
    tenancy.refuse_protected(spec(obj("ConfigMap"), **fields), namespace)
