"""Turns an Environment's spec into the manifests driftguard applies.

Pure: no I/O. Rendering adds the contract's labels and the target namespace,
and refuses a blueprint that names one object twice or points elsewhere.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftguard.core import attribution, model
from driftguard.core.model import EnvironmentSpec, InvalidSpecError, ObjectKey


@dataclass(frozen=True, slots=True)
class Owner:
    """The Environment the manifests belong to."""

    name: str
    namespace: str

    @property
    def labels(self) -> dict[str, str]:
        return {
            model.LABEL_MANAGED_BY: model.FIELD_MANAGER,
            model.LABEL_ENVIRONMENT: self.name,
            model.LABEL_ENVIRONMENT_NAMESPACE: self.namespace,
        }

    @property
    def selector(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.labels.items())

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def without_owner_labels(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest minus the labels driftguard adds, for objects it only observes."""
    trimmed = dict(manifest)
    meta = trimmed["metadata"] = dict(manifest["metadata"])
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in _OWNER_KEYS}
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    return trimmed


_OWNER_KEYS = (*model.OWNER_LABELS, model.LABEL_ADOPTED)


def adopted(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest marked as adopted: it existed before, so it is released, never deleted."""
    marked = dict(manifest)
    meta = marked["metadata"] = dict(manifest["metadata"])
    meta["labels"] = {**(meta.get("labels") or {}), model.LABEL_ADOPTED: "true"}
    return marked


def owner_of(manifest: dict[str, Any]) -> Owner | None:
    """The Environment that a live object's labels point at, if any."""
    labels = (manifest.get("metadata") or {}).get("labels") or {}
    name = labels.get(model.LABEL_ENVIRONMENT)
    namespace = labels.get(model.LABEL_ENVIRONMENT_NAMESPACE)
    if labels.get(model.LABEL_MANAGED_BY) != model.FIELD_MANAGER or not name or not namespace:
        return None
    return Owner(name=name, namespace=namespace)


def manifests(
    spec: EnvironmentSpec,
    owner: Owner,
    *,
    is_namespaced: Callable[[str, str], bool],
) -> dict[ObjectKey, dict[str, Any]]:
    """The desired objects keyed by identity, sorted so that applies are repeatable.

    `is_namespaced(apiVersion, kind)` comes from API discovery; it raises
    InvalidSpecError for a kind the server does not serve.
    """
    target = spec.target_namespace or owner.namespace
    desired: dict[ObjectKey, dict[str, Any]] = {}
    # One dict for every manifest that sets no labels of its own (most): desired manifests
    # are never changed in place (`adopted` and `without_owner_labels` make copies).
    labels = owner.labels
    for index, source in enumerate(spec.resources):
        manifest = _render_one(source, labels, target, is_namespaced, index)
        key = ObjectKey.of(manifest)
        if key in desired:
            raise InvalidSpecError(f"spec.resources[{index}]: {key} appears more than once")
        desired[key] = manifest
    return dict(sorted(desired.items(), key=lambda item: _apply_order(item[0])))


def copy_json(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists, scalars): a third of copy.deepcopy's time,
    which a pass over every object after a restart spent a tenth of its CPU in."""
    if isinstance(value, dict):
        return {key: copy_json(child) for key, child in value.items()}
    if isinstance(value, list):
        return [copy_json(child) for child in value]
    return value


def _render_one(
    source: dict[str, Any],
    labels: dict[str, str],
    target: str,
    is_namespaced: Callable[[str, str], bool],
    index: int,
) -> dict[str, Any]:
    manifest: dict[str, Any] = copy_json(source)
    meta = manifest.setdefault("metadata", {})
    for forbidden, why in _SERVER_METADATA.items():
        if forbidden in meta:
            raise InvalidSpecError(
                f"spec.resources[{index}].metadata.{forbidden}: not allowed in a blueprint{why}"
            )
    if attribution.ANNOTATION in (meta.get("annotations") or {}):
        # Applied by the operator, whose writes the webhook does not see, it would name
        # whoever the copied stamp names.
        raise InvalidSpecError(
            f"spec.resources[{index}].metadata.annotations.{attribution.ANNOTATION}: not "
            "allowed in a blueprint: driftguard's admission webhook writes it; remove it"
        )
    if manifest.pop("status", None):
        # Silently dropping it would hide a copy of `kubectl get -o yaml` or a wrong belief
        # that driftguard keeps status; `status: {}` (from `--dry-run -o yaml`) is harmless.
        raise InvalidSpecError(
            f"spec.resources[{index}].status: not allowed in a blueprint: the object's "
            "controller writes status, driftguard never applies it; remove it"
        )
    if is_namespaced(manifest["apiVersion"], manifest["kind"]):
        named = meta.get("namespace")
        if named not in (None, "", target):
            raise InvalidSpecError(
                f"spec.resources[{index}].metadata.namespace: {named!r} differs from the "
                f"target namespace {target!r}; leave it empty or set spec.targetNamespace"
            )
        meta["namespace"] = target
    elif meta.pop("namespace", None):
        raise InvalidSpecError(
            f"spec.resources[{index}].metadata.namespace: {manifest['kind']} is cluster-scoped; "
            "remove the namespace (was a namespaced kind meant?)"
        )
    own = meta.get("labels")
    meta["labels"] = {**own, **labels} if own else labels
    if manifest["apiVersion"] == "v1" and manifest["kind"] in _STRING_MAPS:
        _check_string_maps(manifest, index)
    if manifest["apiVersion"] == "v1" and manifest["kind"] == "Secret":
        _fold_string_data(manifest)
    return manifest


_SET_BY_SERVER = ": the API server sets it (remove it from a copy of `kubectl get -o yaml`)"
# The CRD's CEL cannot see these: an embedded object's metadata shows it only name,
# generateName, namespace, labels and annotations.
_SERVER_METADATA = {
    "generateName": ": give metadata.name, driftguard follows an object by its name",
    "uid": _SET_BY_SERVER,
    "resourceVersion": _SET_BY_SERVER,
    "managedFields": _SET_BY_SERVER,
}


_STRING_MAPS = {"ConfigMap": ("data", "binaryData"), "Secret": ("data", "stringData")}
_BASE64 = {("ConfigMap", "binaryData"), ("Secret", "data")}


def _check_string_maps(manifest: dict[str, Any], index: int) -> None:
    """ConfigMap and Secret data are maps of strings, base64 where the API says so.

    The server would refuse anything else, at the preflight, with a decoding message that
    shows no path (or, for a Secret, the value); a deep structure there never reaches it.
    """
    kind = manifest["kind"]
    for field in _STRING_MAPS[kind]:
        values = manifest.get(field)
        if values is not None and not isinstance(values, dict):
            raise InvalidSpecError(f"spec.resources[{index}].{field}: must be a map of strings")
        for key, value in (values or {}).items():
            where = f"spec.resources[{index}].{field}.{key}"
            if not isinstance(value, str):
                raise InvalidSpecError(f"{where}: must be a string")
            if "\ufffd" in value:
                # kubectl and the API server replace bytes that are not UTF-8 with U+FFFD:
                # applying the value would store something else than the file held.
                raise InvalidSpecError(
                    f"{where}: holds bytes that were not UTF-8 (replaced by U+FFFD on the "
                    "way); put binary values base64-encoded in data or binaryData"
                )
            if (kind, field) in _BASE64 and not _is_base64(value):
                plain = "stringData" if kind == "Secret" else "data"
                raise InvalidSpecError(
                    f"{where}: not valid base64 ({kind} {field} holds base64; put plain text "
                    f"in {plain} instead)"
                )


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        return False
    return True


def _fold_string_data(secret: dict[str, Any]) -> None:
    """stringData is write-only: the server stores it in data, base64-encoded.

    Applying it as data lets driftguard own, and so watch, the stored field.
    """
    plain = secret.pop("stringData", None) or {}
    data = secret.setdefault("data", {})
    for key, value in plain.items():
        data[key] = base64.b64encode(str(value).encode()).decode()


# Kinds others depend on go first, as kubectl and Helm order them.
_FIRST = ("Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap")


def _apply_order(key: ObjectKey) -> tuple[int, str, str, str]:
    rank = _FIRST.index(key.kind) if key.kind in _FIRST else len(_FIRST)
    return (rank, key.kind, key.namespace, key.name)
