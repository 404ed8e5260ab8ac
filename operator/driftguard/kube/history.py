"""What an Environment was, revision by revision, and what its Blueprints were.

Each applied revision of an Environment is kept as a ControllerRevision in the
Environment's namespace, owned by it, as Deployments and StatefulSets keep theirs:
the garbage collector removes them with the Environment, `kubectl get
controllerrevisions` shows them, and nothing is added to status. Each revision of a
Blueprint is kept the same way in the operator's namespace, so an Environment can
pin one. Written as the operator; they are the operator's records, not the tenant's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from driftguard.core import model
from driftguard.core.blueprint import BLUEPRINT_KIND, BLUEPRINT_PLURAL
from driftguard.core.status import AppliedBlueprint
from driftguard.kube import timestamps
from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.retries import retrying

CONTROLLER_REVISIONS = Resource(
    "apps", "v1", "ControllerRevision", "controllerrevisions", namespaced=True
)
BLUEPRINTS = Resource(
    model.GROUP, model.VERSION, BLUEPRINT_KIND, BLUEPRINT_PLURAL, namespaced=False
)
LABEL_RECORD = "driftguard.io/record"
"""history (an Environment revision), blueprint (a Blueprint revision) or audit."""
LABEL_BLUEPRINT = "driftguard.io/blueprint"
ANNOTATION_APPLIED_AT = "driftguard.io/applied-at"
ANNOTATION_GENERATION = "driftguard.io/generation"
ANNOTATION_SPEC_MANAGERS = "driftguard.io/spec-managers"
ANNOTATION_APPLIED_BY = "driftguard.io/applied-by"
"""The person whose write the revision is, as the attribution webhook vouched (else absent)."""
_NAME_LIMIT = 253


def record_name(owner: str, revision: int) -> str:
    """`<owner>-r<revision>`, shortened with a hash when the name would be too long."""
    suffix = f"-r{revision}"
    if len(owner) + len(suffix) <= _NAME_LIMIT:
        return owner + suffix
    digest = hashlib.sha256(owner.encode()).hexdigest()[:10]
    return f"{owner[: _NAME_LIMIT - len(suffix) - 11]}-{digest}{suffix}"


def spec_managers(body: dict[str, Any]) -> list[str]:
    """The field managers that own any part of an object's spec (not its status)."""
    managers = []
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        if entry.get("subresource"):
            continue
        if "f:spec" in (entry.get("fieldsV1") or {}) and entry.get("manager"):
            managers.append(str(entry["manager"]))
    return sorted(set(managers))


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    """Makes `body` (an Environment by default) the owner: its deletion takes the record."""
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", f"{model.GROUP}/{model.VERSION}"),
        "kind": body.get("kind", model.KIND),
        "name": meta["name"],
        "uid": meta["uid"],
    }


@dataclass(frozen=True, slots=True)
class Revision:
    """One kept revision, as `driftguard history` shows it."""

    revision: int
    name: str
    applied_at: str
    generation: int | None
    spec_managers: tuple[str, ...]
    data: dict[str, Any]
    applied_by: str = ""

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Revision:
        meta = obj.get("metadata") or {}
        notes = meta.get("annotations") or {}
        generation = notes.get(ANNOTATION_GENERATION)
        managers = notes.get(ANNOTATION_SPEC_MANAGERS) or ""
        return cls(
            revision=int(obj.get("revision") or 0),
            name=str(meta.get("name")),
            applied_at=str(notes.get(ANNOTATION_APPLIED_AT) or meta.get("creationTimestamp")),
            generation=int(generation) if generation and generation.isdigit() else None,
            spec_managers=tuple(m for m in managers.split(",") if m),
            data=obj.get("data") or {},
            applied_by=str(notes.get(ANNOTATION_APPLIED_BY) or ""),
        )

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.data.get("spec") or {}
        return spec


async def record(
    cluster: Cluster,
    env: dict[str, Any],
    revision: int,
    *,
    resolved: list[dict[str, Any]] | None,
    blueprint: AppliedBlueprint | None,
    limit: int,
    applied_by: str | None = None,
) -> None:
    """Keeps the Environment's spec as applied at `revision`, then drops the oldest past `limit`.

    `applied_by`: the person whose write this spec is, when the webhook vouched for one."""
    meta = env["metadata"]
    data: dict[str, Any] = {"spec": env.get("spec") or {}}
    if resolved is not None:
        data["resources"] = resolved
    if blueprint is not None:
        data["blueprint"] = blueprint.model_dump(mode="json")
    manifest = _revision(
        name=record_name(meta["name"], revision),
        namespace=meta["namespace"],
        labels={model.LABEL_ENVIRONMENT: meta["name"], LABEL_RECORD: "history"},
        annotations={
            ANNOTATION_APPLIED_AT: timestamps.now(),
            ANNOTATION_GENERATION: str(meta.get("generation") or ""),
            ANNOTATION_SPEC_MANAGERS: ",".join(spec_managers(env)),
            **({ANNOTATION_APPLIED_BY: applied_by} if applied_by else {}),
        },
        owner=env,
        revision=revision,
        data=data,
    )
    await retrying(lambda: cluster.apply(CONTROLLER_REVISIONS, manifest))
    await _trim(cluster, env, keep=max(limit, 1))


async def revisions(cluster: Cluster, namespace: str, name: str) -> list[Revision]:
    """The kept revisions of one Environment, oldest first."""
    selector = f"{model.LABEL_ENVIRONMENT}={name},{LABEL_RECORD}=history"
    items, _ = await retrying(
        lambda: cluster.list_objects(CONTROLLER_REVISIONS, namespace=namespace, selector=selector)
    )
    return sorted((Revision.of(item) for item in items), key=lambda r: r.revision)


async def _trim(cluster: Cluster, env: dict[str, Any], *, keep: int) -> None:
    meta = env["metadata"]
    selector = f"{model.LABEL_ENVIRONMENT}={meta['name']},{LABEL_RECORD}=history"
    items, _ = await retrying(
        lambda: cluster.list_objects(
            CONTROLLER_REVISIONS, namespace=meta["namespace"], selector=selector
        )
    )
    mine = [item for item in items if _is_owned_by(item, meta["uid"])]
    # Records of an earlier Environment of the same name go too: the GC may not have yet.
    stale = [item for item in items if not _is_owned_by(item, meta["uid"])]
    mine.sort(key=lambda item: int(item.get("revision") or 0))
    for item in stale + mine[: max(len(mine) - keep, 0)]:
        item_meta = item["metadata"]
        await retrying(
            lambda m=item_meta: cluster.delete(  # type: ignore[misc]
                CONTROLLER_REVISIONS, m["namespace"], m["name"], m["uid"]
            )
        )


def _is_owned_by(obj: dict[str, Any], uid: str) -> bool:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(owner.get("uid") == uid for owner in owners)


async def record_blueprint(
    cluster: Cluster, namespace: str, blueprint: dict[str, Any], *, applied_by: str | None = None
) -> None:
    """Keeps a Blueprint's spec at its generation, so Environments can pin that revision."""
    meta = blueprint["metadata"]
    generation = int(meta.get("generation") or 1)
    manifest = _revision(
        name=record_name(f"blueprint-{meta['name']}", generation),
        namespace=namespace,
        labels={LABEL_BLUEPRINT: meta["name"][:63], LABEL_RECORD: "blueprint"},
        annotations={
            ANNOTATION_APPLIED_AT: timestamps.now(),
            **({ANNOTATION_APPLIED_BY: applied_by} if applied_by else {}),
        },
        owner=blueprint,
        revision=generation,
        data={"spec": blueprint.get("spec") or {}, "name": meta["name"]},
    )
    await retrying(lambda: cluster.apply(CONTROLLER_REVISIONS, manifest))


async def blueprint_revisions(
    cluster: Cluster, name: str, namespace: str | None
) -> dict[int, dict[str, Any]]:
    """A Blueprint's kept specs by revision (namespace None: wherever the operator keeps them)."""
    selector = f"{LABEL_BLUEPRINT}={name[:63]},{LABEL_RECORD}=blueprint"
    items, _ = await retrying(
        lambda: cluster.list_objects(CONTROLLER_REVISIONS, namespace=namespace, selector=selector)
    )
    kept: dict[int, dict[str, Any]] = {}
    for item in items:
        data = item.get("data") or {}
        if data.get("name") == name:
            kept[int(item.get("revision") or 0)] = data.get("spec") or {}
    return kept


def _revision(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    owner: dict[str, Any],
    revision: int,
    data: dict[str, Any],
) -> dict[str, Any]:
    """A ControllerRevision owned by `owner`, garbage-collected with it."""
    return {
        "apiVersion": CONTROLLER_REVISIONS.api_version,
        "kind": CONTROLLER_REVISIONS.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(owner)],
        },
        "revision": revision,
        "data": data,
    }
