"""What the board's pages read beyond the grid: one Environment in full, and compare.

Each part is read with the command line's own functions (diff, history, audit, exception
list, compare), so the board answers exactly as `driftguard diff|history|audit|compare`
do, Secret values redacted by the same code. Each part is read on its own: one that RBAC
refuses says so on the page, and the rest still shows. Reads only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from driftguard.cli import comparison, excepting, inspection, views
from driftguard.cli.board import grid
from driftguard.core import attribution, exception, model
from driftguard.kube import audit, history
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS
from driftguard.kube.errors import ApiError

T = TypeVar("T")
_READ_ERRORS = (ApiError, model.InvalidSpecError, LookupError, ValueError)


@dataclass(frozen=True, slots=True)
class Part(Generic[T]):
    """A part of a page: its value, or why it could not be read."""

    value: T | None
    error: str = ""


async def part(work: Awaitable[T]) -> Part[T]:
    try:
        return Part(await work)
    except _READ_ERRORS as exc:
        return Part(None, exc.describe() if isinstance(exc, ApiError) else str(exc))


@dataclass(frozen=True, slots=True)
class EnvironmentView:
    """One Environment's page."""

    env: dict[str, Any]
    row: grid.Row
    objects: list[dict[str, Any]]
    omitted: int
    conditions: list[dict[str, Any]]
    diffs: Part[list[inspection.Reported]]
    history: Part[list[list[str]]]  # views.history_rows: header first
    trail: Part[list[list[str]]]  # views.audit_rows without header, newest first
    exceptions: Part[list[list[str]]]  # excepting.exception_rows: header first
    remote: str = ""  # the kubeconfig Secret of a remote cluster, when the spec names one


async def environment_view(cluster: KubeCluster, namespace: str, name: str) -> EnvironmentView:
    """LookupError when it does not exist (or the viewer may not get it)."""
    env = await views.get_environment(cluster, name, namespace)
    status = env.get("status") or {}
    ref = ((env.get("spec") or {}).get("kubeConfig") or {}).get("secretRef") or {}
    return EnvironmentView(
        env=env,
        row=grid.row_of(env),
        objects=[_object(entry) for entry in status.get("resources") or []],
        omitted=int(status.get("resourcesOmitted") or 0),
        conditions=list(status.get("conditions") or []),
        diffs=await part(inspection.reported(cluster, env)),
        history=await part(_history(cluster, env)),
        trail=await part(_trail(cluster, namespace, name)),
        exceptions=await part(_exceptions(cluster, namespace, name)),
        remote=str(ref.get("name") or ""),
    )


def _object(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        **entry,
        "who": attribution.describe(entry.get("changedByUser"), entry.get("changedBy")),
    }


async def _history(cluster: KubeCluster, env: dict[str, Any]) -> list[list[str]]:
    meta = env["metadata"]
    kept = await history.revisions(cluster, meta["namespace"], meta["name"])
    return views.history_rows(kept, views.current_revision(env))


async def _trail(cluster: KubeCluster, namespace: str, name: str) -> list[list[str]]:
    trail = await cluster.get(audit.CONFIGMAPS, namespace, audit.trail_name(name))
    text = ((trail or {}).get("data") or {}).get(audit.KEY, "")
    incidents = views.select(audit.parse(text), since=None, now=datetime.now(UTC))
    return list(reversed(views.audit_rows(incidents)[1:]))


async def _exceptions(cluster: KubeCluster, namespace: str, name: str) -> list[list[str]]:
    path = f"{excepting.PATH}/namespaces/{quote(namespace)}/{exception.PLURAL}"
    try:
        listed = await cluster.connection.json("GET", path)
    except ApiError as exc:
        if exc.is_not_found:  # the DriftException CRD is not installed: there are none
            return []
        exc.verb, exc.kind, exc.namespace = "list", exception.KIND, namespace
        raise
    items = [
        item
        for item in listed.get("items") or []
        if ((item.get("spec") or {}).get("environmentRef") or {}).get("name") == name
    ]
    items.sort(key=lambda i: str(i["metadata"].get("creationTimestamp")), reverse=True)
    return excepting.exception_rows(items, with_namespace=False)


@dataclass(frozen=True, slots=True)
class CompareView:
    """Environments side by side, as `driftguard compare` answers."""

    labels: list[str]
    rows: list[tuple[comparison.Row, list[str]]] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    error: str = ""


async def compare_view(
    cluster: KubeCluster, targets: Sequence[tuple[str, str]], *, everything: bool
) -> CompareView:
    labels = [f"{ns}/{name}" for ns, name in targets]
    try:
        sides = []
        for namespace, name in targets:
            env = await cluster.get(ENVIRONMENTS, namespace, name)
            if env is None:
                raise LookupError(f"Environment {namespace}/{name} not found")
            sides.append(await comparison.side_of(cluster, env))
    except _READ_ERRORS as exc:
        return CompareView(labels, error=exc.describe() if isinstance(exc, ApiError) else str(exc))
    found = comparison.rows(sides)
    shown = [
        (r, comparison.cells(r)) for r in found if comparison.is_shown(r, everything=everything)
    ]
    return CompareView(labels, shown, comparison.drift_lines(labels, found))
