"""The Environment's spec as pydantic models, the object identity and the label keys.

The spec models are the single source of truth for the CRD schema (see `crd.py`); the
status models are in `status.py`, the Blueprint's in `blueprint.py`.
Pure: no I/O, no clock, no client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, NamedTuple
from urllib.parse import quote

import durationpy
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from driftguard.core.references import BlueprintRef, KubeConfigRef

GROUP = "driftguard.io"
VERSION = "v1alpha1"
KIND = "Environment"
PLURAL = "environments"
FIELD_MANAGER = "driftguard"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_ENVIRONMENT = "driftguard.io/environment"
LABEL_ENVIRONMENT_NAMESPACE = "driftguard.io/environment-namespace"
LABEL_ADOPTED = "driftguard.io/adopted"
"""On an object that existed before its Environment took it over: released, never deleted."""
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"
OWNER_LABELS = (LABEL_MANAGED_BY, LABEL_ENVIRONMENT, LABEL_ENVIRONMENT_NAMESPACE)

_POINTER = r"^(/([^/~]|~[01])*)+$"
_DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
MIN_RESYNC_S = 10.0
RESOURCE_STATUS_LIMIT = 500
"""Entries in status.resources at most: etcd keeps an object under 1.5 MiB, spec included."""
MAX_DEPTH = 100
"""Levels of nesting a blueprint object or values may have. The API server takes 10,000;
no Kubernetes object needs a tenth of this, and deeper ones would only cost recursion."""


def depth(value: Any) -> int:
    """How deeply maps and lists nest in a JSON value, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if level + 1 > MAX_DEPTH:
                    return level + 1  # deep enough to refuse: stop counting
                stack.append((child, level + 1))
        deepest = max(deepest, level)
    return deepest


class Mode(StrEnum):
    ENFORCE = "Enforce"
    OBSERVE = "Observe"


class Prevention(StrEnum):
    OFF = "Off"
    WARN = "Warn"
    DENY = "Deny"


class DeletionPolicy(StrEnum):
    ORPHAN = "Orphan"
    DELETE = "Delete"


class State(StrEnum):
    """The state of one managed object, as status reports it."""

    IN_SYNC = "InSync"
    DRIFTED = "Drifted"
    MISSING = "Missing"
    OVERRIDDEN = "Overridden"
    EXCEPTED = "Excepted"  # tolerated while a DriftException is active
    CONFLICT = "Conflict"
    FIGHTING = "Fighting"
    ERROR = "Error"


class InvalidSpecError(ValueError):
    """The Environment cannot be applied as written; retrying will not help."""


def api_version(group: str, version: str) -> str:
    """`apps/v1`, or `v1` for the core group."""
    return f"{group}/{version}" if group else version


class ObjectKey(NamedTuple):
    """The one identity of a managed object, used for every match."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str

    @property
    def api_version(self) -> str:
        return api_version(self.group, self.version)

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> ObjectKey:
        group, _, version = str(manifest.get("apiVersion", "")).rpartition("/")
        meta = manifest.get("metadata") or {}
        return cls(
            group, version, str(manifest.get("kind", "")), meta.get("namespace") or "", meta["name"]
        )


@dataclass(frozen=True, slots=True)
class Resource:
    """A kind as the API serves it (from discovery)."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return api_version(self.group, self.version)

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        return f"{base}/{quote(name)}" if name else base

    def __str__(self) -> str:
        return self.kind


FROZEN = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

Pointer = Annotated[str, Field(pattern=_POINTER, max_length=512)]


class AllowedChange(BaseModel):
    """A change that is tolerated: never reverted, reported as Overridden."""

    model_config = ConfigDict(
        **FROZEN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minimum) || !has(self.maximum) "
                    "|| self.minimum <= self.maximum",
                    "message": "minimum must be less than or equal to maximum",
                }
            ]
        },
    )

    api_version: str | None = Field(
        None, alias="apiVersion", description="Only objects of this apiVersion."
    )
    kind: str | None = Field(None, description="Only objects of this kind.")
    name: str | None = Field(None, description="Only the object with this name.")
    paths: list[Pointer] = Field(
        min_length=1,
        max_length=64,
        description="RFC 6901 JSON pointers of the fields that may change, e.g. /spec/replicas.",
    )
    minimum: float | None = Field(
        None, description="Lowest tolerated value, for numeric fields; below it is drift."
    )
    maximum: float | None = Field(
        None, description="Highest tolerated value, for numeric fields; above it is drift."
    )

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> AllowedChange:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum must be less than or equal to maximum")
        return self

    @property
    def bounds(self) -> str:
        """`between 2 and 10`, `at most 20`, `at least 2`, or empty: as a person says them."""

        def number(value: float) -> str:
            return str(int(value)) if float(value).is_integer() else str(value)

        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"between {number(low)} and {number(high)}"
        if high is not None:
            return f"at most {number(high)}"
        return f"at least {number(low)}" if low is not None else ""

    def matches(self, key: ObjectKey) -> bool:
        return (
            (self.api_version is None or self.api_version == key.api_version)
            and (self.kind is None or self.kind == key.kind)
            and (self.name is None or self.name == key.name)
        )

    def is_within_bounds(self, value: Any) -> bool:
        if self.minimum is None and self.maximum is None:
            return True
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum
        )


NAME_MAX = 253
"""No Kubernetes object name is longer (a DNS subdomain; etcd keys and labels rely on it)."""
# Looser than RFC 1123 (`a..b` passes, left to the server): a longer pattern exceeds the CEL
# cost budget over 10,000 items.
_SUBDOMAIN = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
_SUBDOMAIN_API_VERSIONS = ("v1", "apps/v1", "batch/v1")
"""Every kind of these groups takes DNS-subdomain names (or stricter, left to the server).
Other groups may not: RBAC names, for one, are path segments such as `system:viewer`."""

# An admission policy reports only the first rule that fails: generateName before a missing name,
# the more telling of the two for an object that has one and not the other.
RESOURCE_RULES: Any = [
    {
        "rule": "!has(self.metadata) || !has(self.metadata.generateName)",
        "message": "metadata.generateName is not allowed in a blueprint: give metadata.name, "
        "driftguard follows an object by its name",
    },
    {"rule": "has(self.apiVersion) && self.apiVersion != ''", "message": "apiVersion is required"},
    {"rule": "has(self.kind) && self.kind != ''", "message": "kind is required"},
    {
        "rule": "has(self.metadata) && has(self.metadata.name) && self.metadata.name != ''",
        "message": "metadata.name is required",
    },
    {
        "rule": "!has(self.metadata) || !has(self.metadata.name) "
        f"|| self.metadata.name.size() <= {NAME_MAX}",
        "message": f"metadata.name must be at most {NAME_MAX} characters",
    },
    {
        "rule": "!has(self.apiVersion) || !(self.apiVersion in "
        f"{list(_SUBDOMAIN_API_VERSIONS)}) || !has(self.metadata) || !has(self.metadata.name) "
        f"|| self.metadata.name.matches('{_SUBDOMAIN}')",
        "message": "metadata.name must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and "
        "'.', starting and ending with a letter or digit), e.g. web-config",
    },
]

# The schema of a list of whole objects: kept as given, checked by the rules above (at
# admission: crdpolicy moves them into a ValidatingAdmissionPolicy).
EMBEDDED_OBJECTS: Any = {
    "items": {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-embedded-resource": True,
        "x-kubernetes-validations": RESOURCE_RULES,
    }
}


class EnvironmentSpec(BaseModel):
    """The blueprint of an environment and how to keep it."""

    model_config = FROZEN

    target_namespace: str | None = Field(
        None,
        alias="targetNamespace",
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace of the managed objects; default: the Environment's own namespace.",
    )
    mode: Mode = Field(
        Mode.ENFORCE, description="Enforce reverts manual changes; Observe only reports them."
    )
    service_account_name: str | None = Field(
        None,
        alias="serviceAccountName",
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "A ServiceAccount in the Environment's namespace: every read and write for this "
            "Environment impersonates it, so its RBAC bounds what the blueprint can do."
        ),
    )
    kube_config: KubeConfigRef | None = Field(
        None,
        alias="kubeConfig",
        description="Act in another cluster, reached with this kubeconfig (as Flux's "
        "spec.kubeConfig); serviceAccountName then names a ServiceAccount there.",
    )
    adopt: bool = Field(
        False,
        description=(
            "Take over objects that exist without driftguard's labels. Adopted objects are "
            "released (labels and field ownership removed), never deleted."
        ),
    )
    prune: bool = Field(
        True, description="Delete objects removed from the blueprint (only ones driftguard made)."
    )
    deletion_policy: DeletionPolicy = Field(
        DeletionPolicy.ORPHAN,
        alias="deletionPolicy",
        description="Orphan leaves the objects when the Environment goes; Delete removes them.",
    )
    suspend: bool = Field(False, description="Stop enforcing: changes are reported, not reverted.")
    suspend_until: str | None = Field(
        None,
        alias="suspendUntil",
        pattern=_RFC3339,
        description=(
            "Pause enforcement and prevention until this RFC 3339 time (break-glass); they "
            "resume by themselves, and drift made meanwhile is reverted then (Enforce)."
        ),
        json_schema_extra={"format": "date-time"},
    )
    prevention: Prevention = Field(
        Prevention.OFF,
        description=(
            "Refuse (Deny) or warn about (Warn) manual changes at admission, with a "
            "ValidatingAdmissionPolicy; Off: only revert or flag them afterwards."
        ),
    )
    resync_interval: str = Field(
        "10m",
        alias="resyncInterval",
        pattern=_DURATION,
        description=(
            "Period of the full check made on top of watches, e.g. 30s, 10m, 1h; at least "
            f"{MIN_RESYNC_S:.0f}s (watches see every change at once: this is a safety net)."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"duration(self) >= duration('{MIN_RESYNC_S:.0f}s')",
                    "message": f"resyncInterval must be at least {MIN_RESYNC_S:.0f}s",
                }
            ]
        },
    )
    resources: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=10000,
        description="The blueprint: complete manifests of the objects this Environment manages.",
        json_schema_extra=EMBEDDED_OBJECTS,
    )
    allowed_changes: list[AllowedChange] = Field(
        default_factory=list,
        alias="allowedChanges",
        description="Changes tolerated within guardrails: never reverted, reported as Overridden.",
    )
    blueprint_ref: BlueprintRef | None = Field(
        None,
        alias="blueprintRef",
        description=(
            "Make the objects from this Blueprint and spec.values instead of listing them in "
            "resources: every Environment of a Blueprint differs only where its values do."
        ),
    )
    values: dict[str, Any] | None = Field(
        None,
        description=(
            "The Blueprint's parameters for this Environment (image tags, replicas, settings), "
            "checked against the Blueprint's schema; unset ones take its defaults."
        ),
    )
    revision_history_limit: int = Field(
        10,
        alias="revisionHistoryLimit",
        ge=0,
        le=100,
        description=(
            "How many applied revisions to keep as ControllerRevisions, for "
            "`driftguard history` and `driftguard rollback`."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvironmentSpec:
        if self.blueprint_ref is not None and self.resources:
            raise ValueError("give either resources or blueprintRef, not both")
        if self.values is not None and self.blueprint_ref is None:
            raise ValueError("values are the parameters of a Blueprint: set blueprintRef too")
        return self

    @field_validator("resources", "values")
    @classmethod
    def _not_too_deep(cls, value: Any) -> Any:
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if item is not None and depth(item) > MAX_DEPTH:
                where = f"[{index}]: " if index is not None else ""
                raise ValueError(
                    f"{where}nested more than {MAX_DEPTH} levels deep; no object needs that"
                )
        return value

    @field_validator("resources")
    @classmethod
    def _each_resource_is_identified(cls, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, manifest in enumerate(resources):
            for field in ("apiVersion", "kind"):
                if not manifest.get(field):
                    raise ValueError(f"[{index}]: {field} is required")
            name = (manifest.get("metadata") or {}).get("name")
            if not name:
                raise ValueError(f"[{index}]: metadata.name is required")
            # The same rules as the CRD's CEL, for specs that never met the API server.
            if not isinstance(name, str) or len(name) > NAME_MAX:
                raise ValueError(f"[{index}]: metadata.name must be at most {NAME_MAX} characters")
            is_subdomain = re.fullmatch(_SUBDOMAIN, name)
            if manifest["apiVersion"] in _SUBDOMAIN_API_VERSIONS and not is_subdomain:
                raise ValueError(f"[{index}]: metadata.name must be a lowercase RFC 1123 subdomain")
        return resources

    @field_validator("resync_interval")
    @classmethod
    def _resync_is_not_a_busy_loop(cls, value: str) -> str:
        if re.fullmatch(_DURATION, value) and parse_duration(value) < MIN_RESYNC_S:
            raise ValueError(
                f"must be at least {MIN_RESYNC_S:.0f}s: watches see every change at once, "
                "the resync is only a safety net"
            )
        return value

    @property
    def resync_seconds(self) -> float:
        return parse_duration(self.resync_interval)


def parse_duration(text: str) -> float:
    """Reads a Go-style duration such as `1h30m` or `500ms` into seconds."""
    # The CRD's pattern allows fewer units than Go does (no ns, us): the same here.
    if not re.fullmatch(_DURATION, text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 10m or 1h")
    return float(durationpy.from_str(text).total_seconds())


def parse_spec(raw: dict[str, Any]) -> EnvironmentSpec:
    """Validates a raw spec; errors name the path, the bad value and what is allowed."""
    try:
        return EnvironmentSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpecError("; ".join(explain(error) for error in exc.errors())) from exc


def explain(error: Any) -> str:
    where = "spec"
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    value = error.get("input")
    # Only scalars outside the blueprint are quoted: a manifest may hold Secret data.
    is_quotable = isinstance(value, str | int | float | bool) and ".resources" not in where
    shown = f" (got {value!r})" if is_quotable else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith("["):  # a validator that names the item itself
        index, _, message = message.partition(": ")
        where += index
    return f"{where}: {message}{shown}"
