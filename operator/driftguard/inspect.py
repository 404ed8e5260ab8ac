"""`driftguard diff` and `driftguard status`: read-only views for people.

diff asks the server what the blueprint would look like applied (a dry-run
server-side apply) and compares it with the live object the way the operator
does. Secret values are replaced before anything is printed.
"""

from __future__ import annotations

import asyncio
import difflib
import sys
from typing import Any

import yaml

from driftguard import diff as drift
from driftguard import model, render
from driftguard.cluster import ENVIRONMENTS, ApiError, KubeCluster

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


async def _diff(name: str, namespace: str | None) -> int:
    cluster = await KubeCluster.connect()
    try:
        ns = namespace or _current_namespace()
        env = await cluster.get(ENVIRONMENTS, ns, name)
        if env is None:
            print(f"Environment {ns}/{name} not found", file=sys.stderr)
            return 2
        spec = model.parse_spec(env.get("spec") or {})
        owner = render.Owner(name=name, namespace=ns)
        kinds = {}
        for m in spec.resources:
            kinds[(m["apiVersion"], m["kind"])] = await cluster.resource(m["apiVersion"], m["kind"])
        desired = render.manifests(
            spec, owner, is_namespaced=lambda av, kind: kinds[(av, kind)].namespaced
        )
        drifted = 0
        for key, manifest in desired.items():
            resource = kinds[(key.api_version, key.kind)]
            live = await cluster.get(resource, key.namespace, key.name)
            if spec.mode is model.Mode.OBSERVE or spec.suspend:
                manifest = render.without_owner_labels(manifest)  # as the operator judges it
            wanted = await cluster.apply(resource, manifest, dry_run=True)
            if live is not None and not drift.compute(drift.expect(wanted), live).is_drifted:
                continue
            drifted += 1
            sys.stdout.write(unified(key, live, wanted))
        return 1 if drifted else 0
    except (ApiError, model.InvalidSpecError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await cluster.close()


def diff(name: str, *, namespace: str | None) -> int:
    return asyncio.run(_diff(name, namespace))


def _current_namespace() -> str:
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        return str(context.get("context", {}).get("namespace") or "default")
    except config.ConfigException:
        return "default"


def _row(env: dict[str, Any], *, with_namespace: bool) -> list[str]:
    status = env.get("status") or {}
    summary = status.get("summary") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready", {})
    in_sync = conditions.get("InSync", {})
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
    ]
    return [env["metadata"]["namespace"], *row] if with_namespace else row


async def _status(namespace: str | None, all_namespaces: bool) -> int:
    cluster = await KubeCluster.connect()
    try:
        ns = None if all_namespaces else (namespace or _current_namespace())
        items, _ = await cluster.list_objects(ENVIRONMENTS, namespace=ns)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await cluster.close()
    header = ["NAME", "MODE", "READY", "INSYNC", "OBJECTS", "DRIFTED", "MISSING", "OVERRIDDEN"]
    header.append("REVISION")
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header] + [_row(env, with_namespace=all_namespaces) for env in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def status(*, namespace: str | None, all_namespaces: bool) -> int:
    return asyncio.run(_status(namespace, all_namespaces))
