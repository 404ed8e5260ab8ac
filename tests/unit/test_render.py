"""render: an Environment's spec to the manifests driftguard applies."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftguard.core import model, render
from driftguard.core.model import InvalidSpecError, ObjectKey

OWNER = render.Owner(name="shop", namespace="platform")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "CustomResourceDefinition", "PersistentVolume"}
CONTRACT_LABELS = {
    "app.kubernetes.io/managed-by": "driftguard",
    "driftguard.io/environment": "shop",
    "driftguard.io/environment-namespace": "platform",
}


def is_namespaced(api_version: str, kind: str) -> bool:
    return kind not in CLUSTER_SCOPED


def obj(kind: str, name: str, api_version: str = "v1", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, **meta}}


def rendered(*resources: dict[str, Any], **spec: Any) -> dict[ObjectKey, dict[str, Any]]:
    parsed = model.parse_spec({"resources": list(resources), **spec})
    return render.manifests(parsed, OWNER, is_namespaced=is_namespaced)


def only(result: dict[ObjectKey, dict[str, Any]]) -> dict[str, Any]:
    (manifest,) = result.values()
    return manifest


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        pytest.param({}, CONTRACT_LABELS, id="no-labels"),
        pytest.param({"app": "web"}, {"app": "web", **CONTRACT_LABELS}, id="own-labels-kept"),
        pytest.param(
            {"app.kubernetes.io/managed-by": "helm", "driftguard.io/environment": "other"},
            CONTRACT_LABELS,
            id="contract-labels-win",
        ),
    ],
)
def test_contract_labels_added(desired: dict[str, str], expected: dict[str, str]) -> None:
    """Every manifest carries the contract's three labels beside its own."""
    manifest = only(rendered(obj("ConfigMap", "c", labels=desired)))
    assert manifest["metadata"]["labels"] == expected


def test_manifests_without_labels_of_their_own_share_one_dict_of_them() -> None:
    """One dict of the contract's labels for all the manifests that set none (a dict per
    object was 90 bytes each); a manifest with its own labels gets its own merged copy."""
    result = list(
        rendered(
            obj("ConfigMap", "a"), obj("ConfigMap", "b"), obj("ConfigMap", "c", labels={"x": "y"})
        ).values()
    )
    a, b, c = (manifest["metadata"]["labels"] for manifest in result)

    assert a is b
    assert a == CONTRACT_LABELS
    assert c is not a
    assert c == {"x": "y", **CONTRACT_LABELS}


@pytest.mark.parametrize(
    ("desired", "spec", "expected"),
    [
        pytest.param(obj("ConfigMap", "c"), {}, "platform", id="default-is-environment-namespace"),
        pytest.param(obj("ConfigMap", "c"), {"targetNamespace": "staging"}, "staging", id="target-namespace"),
        pytest.param(obj("ConfigMap", "c", namespace="staging"), {"targetNamespace": "staging"}, "staging", id="same-namespace-named"),
        pytest.param(obj("ConfigMap", "c", namespace=""), {}, "platform", id="empty-namespace"),
        pytest.param(obj("Namespace", "staging"), {"targetNamespace": "staging"}, None, id="cluster-scoped"),
        pytest.param(obj("ClusterRole", "r", "rbac.authorization.k8s.io/v1", namespace=""), {}, None, id="cluster-scoped-empty-namespace"),
    ],
)  # fmt: skip
def test_namespace(desired: dict[str, Any], spec: dict[str, Any], expected: str | None) -> None:
    """Namespaced kinds land in the target namespace; cluster-scoped kinds have none."""
    result = rendered(desired, **spec)

    manifest = only(result)
    assert manifest["metadata"].get("namespace") == expected
    assert next(iter(result)).namespace == (expected or "")


@pytest.mark.parametrize(
    ("resources", "spec", "message"),
    [
        pytest.param([obj("ConfigMap", "c", namespace="prod")], {"targetNamespace": "staging"}, "spec.resources[0].metadata.namespace: 'prod' differs", id="other-namespace"),
        pytest.param([obj("ConfigMap", "c", namespace="prod")], {}, "target namespace 'platform'", id="other-than-default"),
        pytest.param([obj("ConfigMap", "a"), obj("Secret", "a"), obj("ConfigMap", "a")], {}, "spec.resources[2]: ConfigMap/platform/a appears more than once", id="duplicate"),
        pytest.param([obj("ConfigMap", "a"), obj("ConfigMap", "a", namespace="platform")], {}, "spec.resources[1]: ConfigMap/platform/a", id="duplicate-once-named"),
        pytest.param([obj("Namespace", "n"), obj("Namespace", "n")], {}, "Namespace/n appears more than once", id="duplicate-cluster-scoped"),
        pytest.param([obj("ClusterRole", "r", "rbac.authorization.k8s.io/v1", namespace="x")], {}, "spec.resources[0].metadata.namespace: ClusterRole is cluster-scoped", id="namespace-on-cluster-scoped"),
        pytest.param([{**obj("ConfigMap", "c"), "status": {"phase": "Ready"}}], {}, "spec.resources[0].status: not allowed", id="status"),
        pytest.param([{**obj("Secret", "s"), "data": {"k": "not base64!"}}], {}, "spec.resources[0].data.k: not valid base64", id="secret-data-not-base64"),
        pytest.param([{**obj("Secret", "s"), "data": {"k": 5}}], {}, "spec.resources[0].data.k: must be a string", id="secret-data-not-a-string"),
        pytest.param([{**obj("Secret", "s"), "stringData": ["k"]}], {}, "spec.resources[0].stringData: must be a map", id="secret-string-data-not-a-map"),
        pytest.param([{**obj("ConfigMap", "c"), "data": {"k": {"deep": {"er": "x"}}}}], {}, "spec.resources[0].data.k: must be a string", id="configmap-data-nested"),
        pytest.param([{**obj("ConfigMap", "c"), "binaryData": {"k": "%%"}}], {}, "spec.resources[0].binaryData.k: not valid base64", id="configmap-binary-data-not-base64"),
        pytest.param([obj("ConfigMap", "c", annotations={"driftguard.io/changed-by": "x.y"})], {}, "spec.resources[0].metadata.annotations.driftguard.io/changed-by: not allowed in a blueprint", id="attribution-stamp"),
        pytest.param([{**obj("Secret", "s"), "stringData": {"k": "ab\ufffdcd"}}], {}, "spec.resources[0].stringData.k: holds bytes that were not UTF-8", id="secret-string-data-not-utf8"),
    ],
)  # fmt: skip
def test_invalid_blueprint(
    resources: list[dict[str, Any]], spec: dict[str, Any], message: str
) -> None:
    """A blueprint pointing elsewhere or naming an object twice is an InvalidSpecError."""
    with pytest.raises(InvalidSpecError, match=re.escape(message)):
        rendered(*resources, **spec)


@pytest.mark.parametrize("field", ["resourceVersion", "uid", "generateName", "managedFields"])
def test_forbidden_metadata(field: str) -> None:
    """Server-owned metadata in a blueprint is refused, naming the path."""
    desired = obj("ConfigMap", "c", **{field: "x"})
    with pytest.raises(InvalidSpecError, match=rf"spec\.resources\[0\]\.metadata\.{field}: "):
        rendered(desired)


def test_empty_status_dropped() -> None:
    """An empty status (as `kubectl create --dry-run -o yaml` writes) is dropped, not applied."""
    desired = {**obj("ConfigMap", "c"), "status": {}}
    assert "status" not in only(rendered(desired))


def test_secret_data_error_does_not_show_the_value() -> None:
    """A Secret value that is not base64 is named by its key, never shown."""
    desired = {**obj("Secret", "s"), "data": {"password": "hunter2!"}}
    with pytest.raises(InvalidSpecError) as caught:
        rendered(desired)
    assert "hunter2" not in str(caught.value)


KINDS_IN_ORDER = [
    obj("Namespace", "staging"),
    obj("CustomResourceDefinition", "widgets.example.com", "apiextensions.k8s.io/v1"),
    obj("ServiceAccount", "web"),
    obj("Secret", "a-token"),
    obj("Secret", "b-token"),
    obj("ConfigMap", "web-config"),
    obj("Deployment", "api", "apps/v1"),
    obj("Deployment", "web", "apps/v1"),
    obj("Service", "web"),
]


@given(st.permutations(KINDS_IN_ORDER))
def test_apply_order(resources: list[dict[str, Any]]) -> None:
    """Whatever the blueprint's order, dependencies come first, then kind and name."""
    keys = list(rendered(*resources))
    assert [(k.kind, k.name) for k in keys] == [
        (m["kind"], m["metadata"]["name"]) for m in KINDS_IN_ORDER
    ]


def test_input_not_mutated() -> None:
    """Rendering leaves the parsed spec's manifests as they were."""
    resources = [obj("ConfigMap", "c", labels={"app": "web"}), {**obj("Secret", "s"), "status": {}}]
    spec = model.parse_spec({"resources": resources})
    before = copy.deepcopy(spec.resources)

    render.manifests(spec, OWNER, is_namespaced=is_namespaced)

    assert spec.resources == before


def test_keys_match_manifests() -> None:
    """Each manifest is keyed by its own ObjectKey."""
    result = rendered(*KINDS_IN_ORDER, targetNamespace="staging")
    assert all(ObjectKey.of(manifest) == key for key, manifest in result.items())


def test_unknown_kind_error_propagates() -> None:
    """The discovery callback's InvalidSpecError for an unserved kind stops rendering."""

    def unserved(api_version: str, kind: str) -> bool:
        raise InvalidSpecError(f"{api_version} {kind} is not served")

    spec = model.parse_spec({"resources": [obj("Widget", "w", "example.com/v1")]})
    with pytest.raises(InvalidSpecError, match=re.escape("example.com/v1 Widget is not served")):
        render.manifests(spec, OWNER, is_namespaced=unserved)


# -- owner_of ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        pytest.param({"metadata": {"labels": CONTRACT_LABELS}}, OWNER, id="ours"),
        pytest.param({"metadata": {"labels": {**CONTRACT_LABELS, "app": "web"}}}, OWNER, id="extra-labels"),
        pytest.param({"metadata": {"labels": {**CONTRACT_LABELS, "app.kubernetes.io/managed-by": "helm"}}}, None, id="managed-by-other"),
        pytest.param({"metadata": {"labels": {"driftguard.io/environment": "shop", "driftguard.io/environment-namespace": "platform"}}}, None, id="no-managed-by"),
        pytest.param({"metadata": {"labels": {**CONTRACT_LABELS, "driftguard.io/environment-namespace": ""}}}, None, id="empty-namespace"),
        pytest.param({"metadata": {"labels": {"app.kubernetes.io/managed-by": "driftguard", "driftguard.io/environment": "shop"}}}, None, id="no-environment-namespace"),
        pytest.param({"metadata": {"labels": None}}, None, id="null-labels"),
        pytest.param({}, None, id="no-metadata"),
    ],
)  # fmt: skip
def test_owner_of(live: dict[str, Any], expected: render.Owner | None) -> None:
    """owner_of() reads the Environment from the contract labels, or None if they are incomplete."""
    assert render.owner_of(live) == expected


def test_owner_round_trips_through_labels() -> None:
    """The labels an Owner writes are read back as the same Owner."""
    assert render.owner_of({"metadata": {"labels": OWNER.labels}}) == OWNER


def test_owner_selector_and_str() -> None:
    """An Owner's selector lists the three labels; it prints as namespace/name."""
    assert OWNER.selector == (
        "app.kubernetes.io/managed-by=driftguard,"
        "driftguard.io/environment=shop,"
        "driftguard.io/environment-namespace=platform"
    )
    assert str(OWNER) == "platform/shop"
