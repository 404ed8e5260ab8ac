"""Every write driftguard makes to a managed object, and what it came to.

A server-side apply (field manager `driftguard`, forced), a JSON patch that
takes out list items others added, deletes guarded by the object's uid. Deletes
return closed change records; nothing here decides what to write or reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from jsonpointer import escape

from driftguard.core import model, plan, tracking
from driftguard.core.changes import Change, ChangeSet, Outcome
from driftguard.core.diff import ChangeKind, FieldChange
from driftguard.core.model import ObjectKey
from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.kube.retries import retrying
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)


async def put(
    cluster: Cluster, resource: Resource, manifest: dict[str, Any], *, dry_run: bool = False
) -> dict[str, Any]:
    """Server-side apply of one object; the answer is the object as the server stored it."""
    return await retrying(lambda: cluster.apply(resource, manifest, dry_run=dry_run))


async def revert(
    cluster: Cluster,
    resource: Resource,
    manifest: dict[str, Any],
    drifted: Iterable[FieldChange],
    live: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Puts the blueprint back: takes out list items others added, then force-applies.

    Each list is replaced whole, guarded by a test of its current value, so a list
    that would be left empty (which many kinds refuse) gets the blueprint's items in
    the same request.
    """
    added: dict[str, list[Any]] = {}
    for change in drifted:
        if change.kind is ChangeKind.ADDED:
            added.setdefault(change.pointer.rpartition("/")[0], []).append(change.actual)
    if added and live is not None:
        meta = manifest["metadata"]
        # Guarded by the version; managedFields given as they are, so this patch leaves
        # no Update entry of driftguard's behind (one would keep a removed value owned,
        # and a later apply could then never take it out).
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": tracking.rv(live)},
            {
                "op": "replace",
                "path": "/metadata/managedFields",
                "value": live["metadata"].get("managedFields") or [],
            },
        ]
        for pointer, extra in added.items():
            current = plan.pointer_get(live, pointer)
            if not isinstance(current, list):
                continue
            kept = [item for item in current if item not in extra]
            if not kept:
                ours = plan.pointer_get(manifest, pointer)
                kept = ours if isinstance(ours, list) else []
            ops.append({"op": "replace", "path": pointer, "value": kept})
        try:
            await retrying(
                lambda: cluster.json_patch(resource, meta.get("namespace", ""), meta["name"], ops)
            )
        except ApiError as exc:
            if exc.status not in (409, 422):
                raise
    return await put(cluster, resource, manifest)


def failure(key: ObjectKey, exc: ApiError, doing: str = "") -> Change:
    """A refused request about one object as a closed record: Forbidden for RBAC, else Failed."""
    outcome = Outcome.FORBIDDEN if exc.is_forbidden else Outcome.FAILED
    return Change(key, outcome, message=f"{doing}{key}: {exc.describe()}")


def refused_kind(exc: ApiError) -> Change:
    """A refused request about a whole kind (a list, a watch) as a closed record."""
    outcome = Outcome.FORBIDDEN if exc.is_forbidden else Outcome.FAILED
    key = ObjectKey("", "", exc.kind, exc.namespace or "", "*")
    return Change(key, outcome, message=exc.describe())


def is_adopted(live: dict[str, Any]) -> bool:
    return (live["metadata"].get("labels") or {}).get(model.LABEL_ADOPTED) == "true"


async def prune(
    cluster: Cluster,
    victims: Iterable[tuple[Resource, dict[str, Any]]],
    *,
    dry_run: bool = False,
) -> ChangeSet:
    """Deletes objects driftguard made and releases those it adopted; never deletes those.

    The uid guards the delete against a newer object of the same name.
    """
    changes = []
    for resource, live in victims:
        meta = live["metadata"]
        key = ObjectKey.of(live)
        try:
            if is_adopted(live):
                if not dry_run:
                    await release(cluster, resource, live)
                message = f"{key} removed from the blueprint; adopted, so released, not deleted"
                changes.append(Change(key, Outcome.RELEASED, message=message))
                continue
            await retrying(
                lambda r=resource, m=meta: cluster.delete(  # type: ignore[misc]
                    r, m.get("namespace", ""), m["name"], m["uid"], dry_run=dry_run
                )
            )
            changes.append(Change(key, Outcome.PRUNED, message=f"{key} removed from the blueprint"))
        except ApiError as exc:
            changes.append(failure(key, exc, "prune "))
    return ChangeSet(tuple(changes))


async def release(cluster: Cluster, resource: Resource, live: dict[str, Any]) -> None:
    """Gives an adopted object back: driftguard's labels and field ownership go, values stay.

    An apply that claims nothing would delete the fields only driftguard owned, so
    the managedFields entry is removed by a patch instead (guarded by the version).
    """
    meta = live["metadata"]
    labels = meta.get("labels") or {}
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
    ]
    for label in (*model.OWNER_LABELS, model.LABEL_ADOPTED):
        if label in labels:
            ops.append({"op": "remove", "path": f"/metadata/labels/{escape(label)}"})
    others = [
        entry
        for entry in meta.get("managedFields") or []
        if entry.get("manager") != model.FIELD_MANAGER
    ]
    ops.append({"op": "replace", "path": "/metadata/managedFields", "value": others})
    await retrying(
        lambda: cluster.json_patch(resource, meta.get("namespace", ""), meta["name"], ops)
    )


async def preflight(
    cluster: Cluster, manifests: Iterable[tuple[Resource, dict[str, Any]]]
) -> tuple[dict[ObjectKey, dict[str, Any]], ChangeSet]:
    """Dry-runs every apply of a new revision: all of them pass, or none is made.

    Answers the server's view of each object (no resourceVersion: it does not exist
    yet) and the refusals.
    """
    manifests = list(manifests)

    async def one(resource: Resource, manifest: dict[str, Any]) -> dict[str, Any] | Change:
        try:
            return await put(cluster, resource, manifest, dry_run=True)
        except ApiError as exc:
            return failure(ObjectKey.of(manifest), exc)

    answers = await asyncio.gather(*(one(resource, manifest) for resource, manifest in manifests))
    stored = {
        ObjectKey.of(m): a
        for (_, m), a in zip(manifests, answers, strict=True)
        if isinstance(a, dict)
    }
    return stored, ChangeSet.of(answer for answer in answers if isinstance(answer, Change))


async def delete_labelled(
    cluster: Cluster, scopes: Iterable[tuple[Resource, str | None]], selector: str
) -> ChangeSet:
    """deletionPolicy Delete: removes every object carrying an Environment's labels."""
    victims: list[tuple[Resource, dict[str, Any]]] = []
    for resource, namespace in scopes:
        items, _ = await retrying(
            lambda r=resource, n=namespace: cluster.list_objects(  # type: ignore[misc]
                r, namespace=n, selector=selector
            )
        )
        victims.extend((resource, item) for item in items)
    return await prune(cluster, victims)


def strip(manifest: dict[str, Any], tolerated: frozenset[str]) -> dict[str, Any]:
    """What to apply: the blueprint without the fields that are tolerated overrides."""
    return plan.without(manifest, tolerated)
