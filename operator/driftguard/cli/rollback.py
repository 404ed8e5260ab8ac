"""`driftguard rollback`: an earlier revision's spec written back into the Environment.

The write is a PUT of the Environment by the CLI's user, field manager
`driftguard-rollback`, with the resourceVersion read: the API server audits it like
any change, and the operator records the result as a new revision. A spec another
controller or a GitOps tool manages is refused by default, since that tool would put
it back: the message says which tool, and which commit to change instead.
"""

from __future__ import annotations

import asyncio
import copy
import sys
from collections.abc import Sequence
from typing import Any

from driftguard.cli import inspection, views
from driftguard.kube import history
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS, Resource
from driftguard.kube.errors import ApiError

ROLLBACK_MANAGER = "driftguard-rollback"
_PEOPLE = ("kubectl",)
"""Managers that are a person's tool: every kubectl verb names itself kubectl-<verb>."""
KUSTOMIZATIONS = Resource(
    "kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations", namespaced=True
)
APPLICATIONS = Resource("argoproj.io", "v1alpha1", "Application", "applications", namespaced=True)
FLUX_NAME = "kustomize.toolkit.fluxcd.io/name"
FLUX_NAMESPACE = "kustomize.toolkit.fluxcd.io/namespace"
ARGO_TRACKING = "argocd.argoproj.io/tracking-id"
ARGO_INSTANCE = "app.kubernetes.io/instance"


def is_person(manager: str) -> bool:
    """True for a person's kubectl (any verb) and for driftguard rollback itself."""
    return manager == ROLLBACK_MANAGER or manager.startswith(_PEOPLE)


def tools_among(managers: Sequence[str]) -> list[str]:
    """The managers that are GitOps tools or other controllers: they would undo a rollback."""
    return [m for m in managers if not is_person(m)]


def put_body(env: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The Environment to PUT: its old spec, its current resourceVersion, no managedFields.

    Without managedFields in the body the server keeps the live ones and records this
    write under the rollback's own manager; status is a subresource a PUT ignores.
    """
    meta = {k: v for k, v in env["metadata"].items() if k != "managedFields"}
    body = {k: v for k, v in env.items() if k not in ("status", "metadata", "spec")}
    return {**body, "metadata": meta, "spec": copy.deepcopy(spec)}


def spec_of(rev: history.Revision) -> dict[str, Any]:
    """The spec to write back: the revision's, pinned to the Blueprint revision it was made from.

    Without the pin, an Environment that follows its Blueprint would be made from the
    Blueprint as it is now, so rolling back a bad Blueprint change would change nothing.
    """
    spec = copy.deepcopy(rev.spec)
    ref, used = spec.get("blueprintRef"), rev.data.get("blueprint")
    if not isinstance(ref, dict) or not isinstance(used, dict) or not used.get("revision"):
        return spec
    if ref.get("name") == used.get("name") and ref.get("revision") is None:
        ref["revision"] = int(used["revision"])
    return spec


def argo_application(env: dict[str, Any], managers: Sequence[str]) -> tuple[str, str] | None:
    """The Argo CD Application (namespace, name) that applies the Environment, if it says."""
    meta = env.get("metadata") or {}
    tracking = (meta.get("annotations") or {}).get(ARGO_TRACKING)
    if tracking:
        app = str(tracking).split(":", 1)[0]
        namespace, _, name = app.rpartition("_")  # apps in any namespace: <ns>_<app>
        return namespace or "argocd", name
    instance = (meta.get("labels") or {}).get(ARGO_INSTANCE)
    if instance and any(m.startswith("argocd") for m in managers):
        return "argocd", str(instance)
    return None


async def source_commit(cluster: KubeCluster, env: dict[str, Any], managers: Sequence[str]) -> str:
    """Which commit to change instead, as precisely as the GitOps tool's objects say."""
    labels = (env.get("metadata") or {}).get("labels") or {}
    if labels.get(FLUX_NAME) and labels.get(FLUX_NAMESPACE):
        where = (str(labels[FLUX_NAMESPACE]), str(labels[FLUX_NAME]))
        found = await _read(cluster, KUSTOMIZATIONS, where, ("status", "lastAppliedRevision"))
        what = f"Kustomization {where[0]}/{where[1]}"
        return f"{found} ({what} last applied it)" if found else f"the revision {what} last applied"
    app = argo_application(env, managers)
    if app is not None:
        found = await _read(cluster, APPLICATIONS, app, ("status", "sync", "revision"))
        what = f"Application {app[0]}/{app[1]}"
        return f"{found} ({what} last synced it)" if found else f"the revision {what} last synced"
    return "the revision that tool last applied"


async def _read(
    cluster: KubeCluster, resource: Resource, where: tuple[str, str], path: tuple[str, ...]
) -> str | None:
    """A field of another tool's object, or None when absent or not readable by this user."""
    try:
        node: Any = await cluster.get(resource, *where)
    except ApiError:
        return None
    for step in path:
        node = node.get(step) if isinstance(node, dict) else None
    return str(node) if node else None


def gitops_refusal(env: str, tools: Sequence[str], commit: str) -> str:
    return (
        f"refused: the spec of Environment {env} is managed by {', '.join(tools)} "
        "(a GitOps tool or another controller): it would put the spec back.\n"
        f"Change the blueprint in git instead, from {commit}.\n"
        "--force writes the old spec anyway."
    )


def roll_back(
    name: str, *, namespace: str | None, to_revision: int, force: bool, dry_run: bool
) -> int:
    ns = namespace or inspection.current_namespace()

    async def work(cluster: KubeCluster) -> int:
        env = await views.get_environment(cluster, name, ns)
        label = f"{ns}/{name}"
        target = views.find(await history.revisions(cluster, ns, name), to_revision, label)
        spec = spec_of(target)
        if spec == (env.get("spec") or {}):
            print(f"the spec of {label} already is revision {to_revision}'s: nothing written")
            return 0
        managers = history.spec_managers(env)
        tools = tools_among(managers)
        if tools and not force:
            raise views.Refused(
                gitops_refusal(label, tools, await source_commit(cluster, env, managers))
            )
        if tools:
            print(f"warning: {', '.join(tools)} may put the spec back", file=sys.stderr)
        body = put_body(env, spec)
        await cluster.replace(ENVIRONMENTS, body, field_manager=ROLLBACK_MANAGER, dry_run=dry_run)
        upcoming = (views.current_revision(env) or 0) + 1
        if dry_run:
            sys.stdout.write(
                views.unified_yaml(
                    views.shown_spec(env.get("spec") or {}),
                    views.shown_spec(spec),
                    "spec (now)",
                    f"spec (revision {to_revision})",
                )
            )
            print(f"dry run: rolling back to revision {to_revision} would write the spec above")
        else:
            print(
                f"rolled back to revision {to_revision}: spec written; "
                f"the operator will apply it as revision {upcoming}"
            )
            if spec != target.spec:
                used = target.data["blueprint"]
                print(
                    f"pinned to Blueprint {used['name']} revision {used['revision']}, which "
                    f"revision {to_revision} was made from: remove spec.blueprintRef.revision "
                    "to follow the Blueprint again once it is fixed"
                )
        return 0

    return asyncio.run(views.session(work))
