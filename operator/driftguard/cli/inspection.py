"""`driftguard diff` and `driftguard status`: read-only views for people.

diff asks the server what the blueprint would look like applied (a dry-run
server-side apply of what the operator applies) and judges the live object with
the operator's own pure step, plan.judge: an object shows iff the operator
reports it drifted or missing, so a tolerated change is no drift here either.
It never writes to the cluster. Secret values are replaced before anything is
printed.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import os
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from driftguard.core import attribution, kubeconfig, model, plan, render
from driftguard.core import diff as drift
from driftguard.kube import client, history, sources
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS, Resource
from driftguard.kube.errors import ApiError
from driftguard.kube.library import config as kconfig

_NOISE = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")
REDACTED = "<redacted>"


def redact(
    obj: dict[str, Any], other: dict[str, Any] | None = None, *, side: str = ""
) -> dict[str, Any]:
    """A copy with Secret values replaced; the keys stay, so a changed key still shows.

    Given the other side of a diff, a value that differs is marked with `side`
    (as kubectl diff does), so the changed key shows without showing a value.
    """
    if obj.get("kind") != "Secret":
        return obj
    out = dict(obj)
    for field in ("data", "stringData"):
        values = obj.get(field)
        if not isinstance(values, dict):
            continue
        theirs = (other or {}).get(field) or {}
        out[field] = {
            key: REDACTED if other is None or theirs.get(key) == value else f"{REDACTED} ({side})"
            for key, value in values.items()
        }
    return out


def _readable(obj: dict[str, Any] | None, other: dict[str, Any] | None, side: str) -> list[str]:
    if obj is None:
        return []
    shown = redact({k: v for k, v in obj.items() if k != "status"}, other, side=side)
    meta = {k: v for k, v in (shown.get("metadata") or {}).items() if k not in _NOISE}
    annotations = dict(meta.get("annotations") or {})
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    annotations.pop(attribution.ANNOTATION, None)  # a signature: the person is named above
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    shown["metadata"] = meta
    text: str = yaml.safe_dump(shown, sort_keys=True)
    return text.splitlines(keepends=True)


def unified(key: model.ObjectKey, live: dict[str, Any] | None, wanted: dict[str, Any]) -> str:
    """A unified diff from live to the blueprint as the server would store it."""
    return "".join(
        difflib.unified_diff(
            _readable(live, wanted, "live"),
            _readable(wanted, live, "blueprint"),
            fromfile=f"live/{key}",
            tofile=f"blueprint/{key}",
        )
    )


def trim(
    *,
    key: model.ObjectKey,
    spec: model.EnvironmentSpec,
    desired: dict[str, Any],
    live: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest to dry-run, so the server's answer is what the operator holds.

    Enforce applies the blueprint without its tolerated fields, so a dry-run of the
    same keeps the live value there and the diff does not show it. Observe applies
    nothing; leaving those fields out of its dry-run too changes no verdict, since
    decide() judges an allowed path by its bounds alone. Observe never labels what
    it only watches, so its dry-run carries no owner labels.
    """
    rules = plan.allowed_for(key, spec.allowed_changes)
    tolerated = plan.tolerate(rules, desired, live)[0] if live is not None else frozenset()
    manifest = plan.without(desired, tolerated)
    if plan.mode_of(spec) is model.Mode.OBSERVE:
        return render.without_owner_labels(manifest)
    return manifest


def verdict_for(
    *,
    key: model.ObjectKey,
    owner: render.Owner,
    spec: model.EnvironmentSpec,
    desired: dict[str, Any],
    wanted: dict[str, Any],
    live: dict[str, Any] | None,
) -> plan.Verdict:
    """What the operator reports for one object, given the server's dry-run answer."""
    other = render.owner_of(live) if live is not None else None
    if other is not None and other != owner:
        return plan.Verdict(model.State.CONFLICT, plan.Action.NONE)
    return plan.judge(
        key=key,
        mode=plan.mode_of(spec),
        desired=desired,
        expectation=drift.expect(wanted),
        live=live,
        rules=spec.allowed_changes,
    )


def comparable(
    *, spec: model.EnvironmentSpec, live: dict[str, Any] | None, wanted: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Live and wanted as the diff shows them: in Observe without driftguard's labels.

    Observe judges without those labels (it never sets them), so an object that
    still carries them from an earlier Enforce must not show them as a difference.
    """
    if plan.mode_of(spec) is not model.Mode.OBSERVE:
        return live, wanted
    shown = render.without_owner_labels(live) if live is not None else None
    return shown, render.without_owner_labels(wanted)


def is_reported(verdict: plan.Verdict) -> bool:
    """True when the operator reports the object drifted (Fighting too) or missing."""
    return bool(verdict.drifted) or verdict.state is model.State.MISSING


async def _connect() -> KubeCluster | None:
    """The cluster of the kubeconfig (or in-cluster config); None, said why, without one."""
    try:
        return await KubeCluster.connect()
    except kconfig.ConfigException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


@dataclass(frozen=True, slots=True)
class Reported:
    """One object the operator reports drifted or missing: who changed it and the diff."""

    key: model.ObjectKey
    changed_by: str
    text: str


SECRETS = Resource("", "v1", "Secret", "secrets", namespaced=True)


async def live_cluster(cluster: KubeCluster, env: dict[str, Any]) -> KubeCluster | None:
    """The remote cluster an Environment acts in (spec.kubeConfig), reached with its
    kubeconfig Secret as read by the CLI's user; None: the Environment's own cluster.
    The kubeconfig is judged as the operator judges it: no programs, no local files."""
    ref = ((env.get("spec") or {}).get("kubeConfig") or {}).get("secretRef") or {}
    if not ref.get("name"):
        return None
    namespace, name, key = env["metadata"]["namespace"], ref["name"], ref.get("key") or "value"
    where = f"Secret {namespace}/{name} key {key}"
    secret = await cluster.get(SECRETS, namespace, name)
    encoded = ((secret or {}).get("data") or {}).get(key)
    if not encoded:
        raise LookupError(
            f"{where}, the kubeconfig of Environment {namespace}/{env['metadata']['name']}, "
            "is not there"
        )
    try:
        config = kubeconfig.load(base64.b64decode(encoded), where=where)
    except kubeconfig.RefusedError as exc:
        raise ValueError(str(exc)) from exc
    return await client.connect_remote(config, gate_of=None)


async def reported(
    cluster: KubeCluster, env: dict[str, Any], *, conflicts: list[model.ObjectKey] | None = None
) -> list[Reported]:
    """What `driftguard diff` prints for an Environment, object by object (the board too).

    `conflicts` collects the objects another Environment manages, which are not compared.
    """
    meta = env["metadata"]
    owner = render.Owner(name=meta["name"], namespace=meta["namespace"])
    # An Environment made from a Blueprint declares its objects there: made as the operator
    # makes them (its values laid over the templates), or there would be nothing to compare.
    body, _ = await sources.declared(
        env,
        lookup=lambda name: cluster.get(history.BLUEPRINTS, "", name),
        pinned=sources.kept_in(cluster, None),
    )
    spec = model.parse_spec(body.get("spec") or {})
    remote = await live_cluster(cluster, env)  # the cluster its objects are in
    try:
        return await _reported_in(remote or cluster, env, spec, owner, conflicts)
    finally:
        if remote is not None:
            await remote.close()


async def _reported_in(
    cluster: KubeCluster,
    env: dict[str, Any],
    spec: model.EnvironmentSpec,
    owner: render.Owner,
    conflicts: list[model.ObjectKey] | None,
) -> list[Reported]:
    found = []
    for key, (resource, desired) in (await _render(cluster, spec, owner)).items():
        live = await cluster.get(resource, key.namespace, key.name)
        manifest = trim(key=key, spec=spec, desired=desired, live=live)
        wanted = await cluster.apply(resource, manifest, dry_run=True)
        verdict = verdict_for(
            key=key, owner=owner, spec=spec, desired=desired, wanted=wanted, live=live
        )
        if verdict.state is model.State.CONFLICT and conflicts is not None:
            conflicts.append(key)
        if is_reported(verdict):
            text = unified(key, *comparable(spec=spec, live=live, wanted=wanted))
            found.append(Reported(key, changed_by(env, key), text))
    return found


async def _diff(name: str, namespace: str | None) -> int:
    cluster = await _connect()
    if cluster is None:
        return 2
    try:
        ns = namespace or current_namespace()
        env = await cluster.get(ENVIRONMENTS, ns, name)
        if env is None:
            print(f"Environment {ns}/{name} not found", file=sys.stderr)
            return 2
        conflicts: list[model.ObjectKey] = []
        found = await reported(cluster, env, conflicts=conflicts)
        for key in conflicts:
            print(f"{key} is managed by another Environment; not compared", file=sys.stderr)
        for item in found:
            print(f"# {item.key}: {item.changed_by}")
            sys.stdout.write(item.text)
        return 1 if found else 0
    except (ApiError, model.InvalidSpecError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await cluster.close()


def changed_by(env: dict[str, Any], key: model.ObjectKey) -> str:
    """Who the operator last saw change the object, from the Environment's status."""
    for entry in (env.get("status") or {}).get("resources") or []:
        if (entry.get("kind"), entry.get("namespace") or "", entry.get("name")) == (
            key.kind,
            key.namespace,
            key.name,
        ):
            who = attribution.describe(entry.get("changedByUser"), entry.get("changedBy"))
            if who:
                at = entry.get("lastDriftTime")
                return f"changed by {who}" + (f" at {at}" if at else "")
    return "changed by unknown"


async def _render(
    cluster: KubeCluster, spec: model.EnvironmentSpec, owner: render.Owner
) -> dict[model.ObjectKey, tuple[Resource, dict[str, Any]]]:
    """The blueprint as the operator renders it, each manifest with its kind's resource."""
    kinds: dict[tuple[str, str], Resource] = {}
    for m in spec.resources:
        kinds[(m["apiVersion"], m["kind"])] = await cluster.resource(m["apiVersion"], m["kind"])
    desired = render.manifests(
        spec, owner, is_namespaced=lambda av, kind: kinds[(av, kind)].namespaced
    )
    return {key: (kinds[(key.api_version, key.kind)], m) for key, m in desired.items()}


def diff(name: str, *, namespace: str | None) -> int:
    return asyncio.run(_diff(name, namespace))


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, else `default`.

    kubernetes_asyncio reads the kubeconfig synchronously here; the CLI thus needs
    no second client library (the sync `kubernetes` package) just for this.
    """
    try:
        _, context = kconfig.list_kube_config_contexts(os.environ.get("KUBECONFIG"))
    except kconfig.ConfigException:
        return "default"
    return str(((context or {}).get("context") or {}).get("namespace") or "default")


def status_row(env: dict[str, Any], *, with_namespace: bool, wide: bool = False) -> list[str]:
    """One Environment as `driftguard status` shows it, in the columns of status_header."""
    status = env.get("status") or {}
    summary = status.get("summary") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready", {})
    in_sync = conditions.get("InSync", {})
    spec = env.get("spec") or {}
    suspended = conditions.get("Suspended", {})
    until = spec.get("suspendUntil") if suspended.get("status") == "True" else None
    row = [
        env["metadata"]["name"],
        (env.get("spec") or {}).get("mode", "Enforce"),
        str(ready.get("reason", "-")),
        str(in_sync.get("status", "Unknown")),
        f"{summary.get('inSync', 0)}/{summary.get('managed', 0)}",
        str(summary.get("drifted", 0)),
        str(summary.get("missing", 0)),
        str(summary.get("overridden", 0)),
        str(status.get("revision", 0)),
        # What the API server enforces (the Prevention condition), not what the spec asks.
        str(conditions.get("Prevention", {}).get("reason", "Off")),
        f"until {until}" if until else ("yes" if spec.get("suspend") else "-"),
    ]
    if wide:
        last = status.get("lastDrift") or {}
        who = attribution.describe(last.get("changedByUser"), last.get("changedBy"))
        row += [str(last.get("object") or "-"), str(last.get("time") or "-"), who or "-"]
    return [env["metadata"]["namespace"], *row] if with_namespace else row


def status_header(*, with_namespace: bool, wide: bool) -> list[str]:
    """The columns of `driftguard status` (and of the board's grid)."""
    header = ["NAME", "MODE", "READY", "INSYNC", "OBJECTS", "DRIFTED", "MISSING", "OVERRIDDEN"]
    header += ["REVISION", "PREVENTION", "SUSPENDED"]
    if wide:
        header += ["LAST DRIFT", "DRIFT TIME", "CHANGED BY"]
    return ["NAMESPACE", *header] if with_namespace else header


async def _status(namespace: str | None, all_namespaces: bool, wide: bool) -> int:
    cluster = await _connect()
    if cluster is None:
        return 2
    try:
        ns = None if all_namespaces else (namespace or current_namespace())
        items, _ = await cluster.list_objects(ENVIRONMENTS, namespace=ns)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await cluster.close()
    header = status_header(with_namespace=all_namespaces, wide=wide)
    rows = [header] + [status_row(env, with_namespace=all_namespaces, wide=wide) for env in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def status(*, namespace: str | None, all_namespaces: bool, wide: bool = False) -> int:
    return asyncio.run(_status(namespace, all_namespaces, wide))
