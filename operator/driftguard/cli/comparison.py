"""`driftguard compare`: several Environments side by side, declared and live.

Objects are matched across Environments by apiVersion, kind and name (the namespace
differs per Environment); fields by RFC 6901 pointer. Only the fields a blueprint
declares are compared, so what the server adds (defaults, status, metadata) never
shows. What an Environment declares comes from `sources.declared`, the step the
operator applies, so a Blueprint's values are laid over its templates exactly as
applied. Live objects are read as the CLI's user. Secret values are never printed:
a row says only whether they differ. Reads only; never writes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jsonpointer import escape

from driftguard.cli import inspection, views
from driftguard.core import model, plan, render
from driftguard.core.diff import MISSING
from driftguard.kube import client, history, sources
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS

ObjectId = tuple[str, str, str]
"""apiVersion, kind, name: one object across Environments."""
ABSENT: Any = MISSING
"""Not declared, or not in the live object."""
_GONE = "<missing>"
_WIDTH = 60
_SKIPPED = ("/metadata/namespace",)
"""Differs by design between Environments; the target namespace, not content."""


@dataclass(frozen=True, slots=True)
class Side:
    """One Environment as compare sees it: what it declares and what is live."""

    label: str
    declared: dict[ObjectId, dict[str, Any]]
    live: dict[ObjectId, dict[str, Any] | None]
    tolerated: dict[ObjectId, frozenset[str]]
    """Pointers whose live value an allowedChanges rule tolerates (within bounds)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One field of one object, in every Environment."""

    obj: ObjectId
    path: str
    declared: tuple[Any, ...]
    live: tuple[Any, ...]
    drifted: tuple[bool, ...]
    tolerated: tuple[bool, ...]

    @property
    def is_secret(self) -> bool:
        return self.obj[1] == "Secret" and self.path.startswith(("/data/", "/stringData/"))

    @property
    def declared_differs(self) -> bool:
        return len({_key(v) for v in self.declared}) > 1

    @property
    def live_differs(self) -> bool:
        return any(self.drifted)

    @property
    def object_name(self) -> str:
        return f"{self.obj[1]}/{self.obj[2]}"


def leaf_values(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a manifest by JSON pointer; an empty map or list is a leaf itself."""
    if isinstance(node, dict) and node:
        found: dict[str, Any] = {}
        for key, value in node.items():
            found.update(leaf_values(value, f"{prefix}/{escape(str(key))}"))
        return found
    if isinstance(node, list) and node:
        found = {}
        for index, value in enumerate(node):
            found.update(leaf_values(value, f"{prefix}/{index}"))
        return found
    return {prefix: node}


def rank(obj: ObjectId, path: str) -> int:
    """Images first, then configuration values (ConfigMap and Secret data), then the rest."""
    if path.rsplit("/", 1)[-1] == "image":
        return 0
    if obj[1] in ("ConfigMap", "Secret") and path.startswith(("/data/", "/binaryData/")):
        return 1
    return 2


def is_same(declared: Any, live: Any) -> bool:
    """True when the live value is the declared one; a declared empty map allows any map."""
    if declared == {} and isinstance(live, dict):
        return True  # the server fills defaults into e.g. `securityContext: {}`
    return bool(declared == live)


def rows(sides: Sequence[Side]) -> list[Row]:
    """Every declared field of every object, in the order people look for them."""
    found: dict[tuple[ObjectId, str], int] = {}
    for side in sides:
        for obj, manifest in side.declared.items():
            for path in leaf_values(manifest):
                if path not in _SKIPPED:
                    found.setdefault((obj, path), len(found))
    ordered = sorted(found, key=lambda k: (rank(*k), k[0][1], k[0][2], k[0][0], found[k]))
    return [_row(obj, path, sides) for obj, path in ordered]


def _row(obj: ObjectId, path: str, sides: Sequence[Side]) -> Row:
    declared, live, drifted, tolerated = [], [], [], []
    for side in sides:
        manifest = side.declared.get(obj)
        wanted = ABSENT if manifest is None else plan.pointer_get(manifest, path)
        if manifest is None:
            found: Any = ABSENT
        elif side.live.get(obj) is None:
            found = _GONE
        else:
            found = plan.pointer_get(side.live[obj], path)
        allowed = any(_covers(p, path) for p in side.tolerated.get(obj, frozenset()))
        differs = wanted is not ABSENT and not is_same(wanted, found)
        declared.append(wanted)
        live.append(found)
        drifted.append(differs and not allowed)
        tolerated.append(differs and allowed)
    return Row(obj, path, tuple(declared), tuple(live), tuple(drifted), tuple(tolerated))


def _covers(allowed: str, path: str) -> bool:
    return path == allowed or path.startswith(allowed.rstrip("/") + "/")


def _key(value: Any) -> str:
    return "\0absent" if value is ABSENT else json.dumps(value, sort_keys=True)


def summarise(value: Any) -> str:
    if value is ABSENT:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


def _secret_tags(row: Row) -> list[str]:
    """`<redacted>` for each declared value, numbered when they differ (and only then)."""
    distinct = list(dict.fromkeys(_key(v) for v in row.declared if v is not ABSENT))
    tags = []
    for value in row.declared:
        if value is ABSENT:
            tags.append("-")
        elif len(distinct) > 1:
            tags.append(f"{inspection.REDACTED} #{distinct.index(_key(value)) + 1}")
        else:
            tags.append(inspection.REDACTED)
    return tags


def cells(row: Row) -> list[str]:
    """One cell per Environment: declared, and the live value where it departs from it."""
    shown = _secret_tags(row) if row.is_secret else [summarise(v) for v in row.declared]
    out = []
    for text, live, drifted, tolerated in zip(
        shown, row.live, row.drifted, row.tolerated, strict=True
    ):
        if live is _GONE:
            text += " (live: missing)"
        elif drifted or tolerated:
            what = "differs" if row.is_secret else f"live: {summarise(live)}"
            text += f" ({what}, allowed)" if tolerated else f" ({what})"
        out.append(text)
    return out


def is_shown(row: Row, *, everything: bool) -> bool:
    return everything or row.declared_differs or row.live_differs or any(row.tolerated)


def compare_rows(
    labels: Sequence[str], found: Sequence[Row], *, everything: bool
) -> list[list[str]]:
    """The table: header, then the rows shown."""
    out = [["OBJECT", "FIELD", *labels]]
    out += [[r.object_name, r.path, *cells(r)] for r in found if is_shown(r, everything=everything)]
    return out


def drift_lines(labels: Sequence[str], found: Sequence[Row]) -> list[str]:
    """Where live differs from declared, one line per Environment and object field."""
    lines = []
    for row in found:
        for label, drifted, live in zip(labels, row.drifted, row.live, strict=True):
            if not drifted:
                continue
            if live is _GONE:
                lines.append(f"{label}: {row.object_name} is missing")
            else:
                lines.append(f"{label}: {row.object_name} {row.path}")
    return list(dict.fromkeys(lines))  # a missing object once, not once per field


def to_json(labels: Sequence[str], found: Sequence[Row], *, everything: bool) -> dict[str, Any]:
    def value(row: Row, v: Any, tag: str) -> Any:
        if v is ABSENT:
            return None
        return tag if row.is_secret and v is not _GONE else v

    shown = [r for r in found if is_shown(r, everything=everything)]
    listed = []
    for row in shown:
        tags = _secret_tags(row) if row.is_secret else [""] * len(labels)
        listed.append(
            {
                "apiVersion": row.obj[0],
                "kind": row.obj[1],
                "name": row.obj[2],
                "path": row.path,
                "declared": {
                    lb: value(row, v, t)
                    for lb, v, t in zip(labels, row.declared, tags, strict=True)
                },
                "live": {
                    lb: value(row, v, inspection.REDACTED)
                    for lb, v in zip(labels, row.live, strict=True)
                },
                "declaredDiffers": row.declared_differs,
                "liveDiffers": [lb for lb, d in zip(labels, row.drifted, strict=True) if d],
                "tolerated": [lb for lb, t in zip(labels, row.tolerated, strict=True) if t],
            }
        )
    return {"environments": list(labels), "rows": listed, "drift": drift_lines(labels, found)}


def parse_target(text: str, default_namespace: str) -> tuple[str, str]:
    """`NAMESPACE/NAME`, or a bare NAME in the current namespace."""
    namespace, _, name = text.rpartition("/")
    if not name:
        raise ValueError(f"{text!r} is not NAMESPACE/NAME")
    return namespace or default_namespace, name


# reading the cluster


async def _environments(
    cluster: KubeCluster, targets: Sequence[str], blueprint: str | None
) -> list[dict[str, Any]]:
    if blueprint is not None:
        items, _ = await cluster.list_objects(ENVIRONMENTS)
        used = [
            env
            for env in items
            if ((env.get("spec") or {}).get("blueprintRef") or {}).get("name") == blueprint
        ]
        if not used:
            raise LookupError(f"no Environment uses Blueprint {blueprint}")
        return sorted(used, key=lambda e: (e["metadata"]["namespace"], e["metadata"]["name"]))
    default = inspection.current_namespace()
    found = []
    for target in targets:
        namespace, name = parse_target(target, default)
        env = await cluster.get(ENVIRONMENTS, namespace, name)
        if env is None:
            raise LookupError(f"Environment {namespace}/{name} not found")
        found.append(env)
    return found


async def side_of(cluster: KubeCluster, env: dict[str, Any], *, label: str = "") -> Side:
    """What one Environment declares (as the operator makes it) and what is live, in the
    cluster it acts in."""
    remote = await inspection.live_cluster(cluster, env)
    try:
        return await _side_in(cluster, remote or cluster, env, label)
    finally:
        if remote is not None:
            await remote.close()


async def _side_in(
    cluster: KubeCluster, live_in: KubeCluster, env: dict[str, Any], label: str
) -> Side:
    meta = env["metadata"]
    label = label or f"{meta['namespace']}/{meta['name']}"
    body, _ = await sources.declared(
        env,
        lookup=lambda name: cluster.get(history.BLUEPRINTS, "", name),
        pinned=sources.kept_in(cluster, None),
    )
    try:
        spec = model.parse_spec(body.get("spec") or {})
    except model.InvalidSpecError as exc:
        raise model.InvalidSpecError(f"Environment {label}: {exc}") from exc
    owner = render.Owner(name=meta["name"], namespace=meta["namespace"])
    kinds = {}
    for m in spec.resources:
        kinds[(m["apiVersion"], m["kind"])] = await live_in.resource(m["apiVersion"], m["kind"])
    rendered = render.manifests(
        spec, owner, is_namespaced=lambda av, kind: kinds[(av, kind)].namespaced
    )
    declared, live, tolerated = {}, {}, {}
    for key, manifest in rendered.items():
        obj = (key.api_version, key.kind, key.name)
        found = await live_in.get(kinds[(key.api_version, key.kind)], key.namespace, key.name)
        declared[obj] = render.without_owner_labels(manifest)
        live[obj] = found
        rules = plan.allowed_for(key, spec.allowed_changes)
        tolerated[obj] = plan.tolerate(rules, manifest, found)[0] if found else frozenset()
    return Side(label, declared, live, tolerated)


def _print(sides: Sequence[Side], *, output: str, everything: bool) -> int:
    labels = [side.label for side in sides]
    found = rows(sides)
    drift = drift_lines(labels, found)
    if output == "json":
        print(json.dumps(to_json(labels, found, everything=everything), indent=2))
        return 1 if drift else 0
    shown = compare_rows(labels, found, everything=everything)
    if len(shown) > 1:
        sys.stdout.write(views.table(shown))
    else:
        print(f"no differences between {', '.join(labels)}")
    if drift:
        print("\nlive differs from declared:")
        print("\n".join(f"  {line}" for line in drift))
    return 1 if drift else 0


def compare(
    targets: Sequence[str],
    *,
    blueprint: str | None,
    output: str,
    everything: bool,
    contexts: Sequence[str] = (),
) -> int:
    """Exit 1 when a live value departs from its declared one anywhere, 2 on errors.

    `contexts`: the kubeconfig context of each target, in order (one: all of them), for
    Environments kept by one operator per cluster."""

    async def work(cluster: KubeCluster) -> int:
        if contexts:
            sides = await _sides_in_contexts(targets, contexts)
        else:
            envs = await _environments(cluster, targets, blueprint)
            sides = [await side_of(cluster, env) for env in envs]
        return _print(sides, output=output, everything=everything)

    return asyncio.run(views.session(work))


async def _sides_in_contexts(targets: Sequence[str], contexts: Sequence[str]) -> list[Side]:
    if len(contexts) not in (1, len(targets)):
        raise ValueError(
            f"give one --context, or one per Environment ({len(targets)}), not {len(contexts)}"
        )
    each = contexts if len(contexts) > 1 else [contexts[0]] * len(targets)
    paired = zip(targets, each, strict=True)
    sides = []
    for target, context in paired:
        cluster = await client.connect_context(context)
        try:
            env = (await _environments(cluster, [target], None))[0]
            sides.append(await side_of(cluster, env, label=f"{context}:{env_label(env)}"))
        finally:
            await cluster.close()
    return sides


def env_label(env: dict[str, Any]) -> str:
    return f"{env['metadata']['namespace']}/{env['metadata']['name']}"
